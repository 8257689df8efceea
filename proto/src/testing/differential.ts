import { ScalarType, create, fromBinary, toBinary, type DescField, type DescMessage, type DescService, type MessageShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import type { Codec } from "../wire/codec.js";
import { Reader } from "../wire/reader.js";
import { Writer } from "../wire/writer.js";
import { exactOf, plainOf } from "./plain.js";
import { RandomMessages } from "./random.js";

/**
 * The checks every generated codec must pass, called from the generated
 * specs (proto/fast/**\/*_fast.spec.ts), one line per codec. protobuf-es's
 * reflection (toBinary, fromBinary) is the reference.
 */

// Bytes compared as a whole: vitest's element-by-element walk made a
// 70 KB payload cost milliseconds, and these checks compare thousands.
expect.addEqualityTesters([
  (a: unknown, b: unknown) => (a instanceof Uint8Array && b instanceof Uint8Array ? same(a, b) : undefined),
]);

/** Random messages per check: enough that every field is set, unset and zero many times over. */
const MESSAGES = 300;
const SEED = 20261204;

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** How protobuf-es's BinaryWriter writes each scalar type, and its wire type. */
const WRITERS: Record<ScalarType, [keyof BinaryWriter, WireType]> = {
  [ScalarType.DOUBLE]: ["double", WireType.Bit64],
  [ScalarType.FLOAT]: ["float", WireType.Bit32],
  [ScalarType.INT64]: ["int64", WireType.Varint],
  [ScalarType.UINT64]: ["uint64", WireType.Varint],
  [ScalarType.INT32]: ["int32", WireType.Varint],
  [ScalarType.FIXED64]: ["fixed64", WireType.Bit64],
  [ScalarType.FIXED32]: ["fixed32", WireType.Bit32],
  [ScalarType.BOOL]: ["bool", WireType.Varint],
  [ScalarType.STRING]: ["string", WireType.LengthDelimited],
  [ScalarType.BYTES]: ["bytes", WireType.LengthDelimited],
  [ScalarType.UINT32]: ["uint32", WireType.Varint],
  [ScalarType.SFIXED32]: ["sfixed32", WireType.Bit32],
  [ScalarType.SFIXED64]: ["sfixed64", WireType.Bit64],
  [ScalarType.SINT32]: ["sint32", WireType.Varint],
  [ScalarType.SINT64]: ["sint64", WireType.Varint],
};

function fieldNumbers(schema: DescMessage): number[] {
  return schema.fields.map((f) => f.number).sort((a, b) => a - b);
}

function messages<D extends DescMessage>(schema: D, seed: number, msTimes = false): MessageShape<D>[] {
  const gen = new RandomMessages(seed, { msTimes });
  return Array.from({ length: MESSAGES }, () => gen.message(schema));
}

/** Unknown fields of every wire type, at numbers no schema here uses. */
function unknownFields(): Uint8Array {
  const w = new BinaryWriter();
  w.tag(9001, WireType.Varint).uint64(123n);
  w.tag(9002, WireType.LengthDelimited).string("from a newer peer");
  w.tag(9003, WireType.Bit32).fixed32(7);
  w.tag(9004, WireType.Bit64).double(1.5);
  w.tag(9005, WireType.StartGroup).tag(1, WireType.Varint).int32(5).tag(9005, WireType.EndGroup);
  return w.finish();
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Calls fn and says whether it threw. */
function throws(fn: () => unknown): boolean {
  try {
    fn();
    return false;
  } catch {
    return true;
  }
}

export function describeExact<D extends DescMessage>(schema: D, codec: Codec<MessageShape<D>>): void {
  describe(`${schema.typeName}, exact codec`, () => {
    it("carries every field of the .proto", () => {
      expect(codec.typeName).toBe(schema.typeName);
      expect([...codec.fields]).toEqual(fieldNumbers(schema));
    });

    it("writes random messages byte for byte as toBinary does", () => {
      for (const m of messages(schema, SEED)) {
        const fast = codec.encode(m);
        const reference = toBinary(schema, m);
        if (!same(fast, reference)) expect(fast).toEqual(reference);
      }
    });

    it("reads random messages as fromBinary does", () => {
      for (const m of messages(schema, SEED + 1)) {
        const bytes = toBinary(schema, m);
        expect(codec.decode(bytes)).toEqual(fromBinary(schema, bytes));
      }
    });

    it("reads what it writes, and writes what it reads", () => {
      for (const m of messages(schema, SEED + 2)) {
        const bytes = codec.encode(m);
        const back = codec.decode(bytes);
        expect(same(codec.encode(back), bytes)).toBe(true);
        expect(same(toBinary(schema, back), bytes)).toBe(true);
      }
    });

    it("skips fields it does not know, as fromBinary does when told to drop them", () => {
      for (const m of messages(schema, SEED + 3).slice(0, 50)) {
        const bytes = concat(toBinary(schema, m), unknownFields());
        expect(codec.decode(bytes)).toEqual(fromBinary(schema, bytes, { readUnknownFields: false }));
      }
    });

    it("reads repeated scalars packed or not, whatever the field says", () => {
      for (const f of schema.fields) {
        if (f.fieldKind !== "list" || f.listKind === "message") continue;
        const t = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
        if (t === ScalarType.STRING || t === ScalarType.BYTES) continue;
        const [method, wire] = WRITERS[t];
        const value = (v: number) => (wire === WireType.Varint && method.endsWith("64") ? BigInt(v) : method === "bool" ? v > 0 : v);
        const w = new BinaryWriter();
        for (const v of [0, 1, 3]) (w.tag(f.number, wire)[method] as (x: unknown) => BinaryWriter)(value(v));
        w.tag(f.number, WireType.LengthDelimited).fork();
        for (const v of [5, 6]) (w[method] as (x: unknown) => BinaryWriter)(value(v));
        w.join();
        const bytes = w.finish();
        expect(codec.decode(bytes)).toEqual(fromBinary(schema, bytes));
      }
    });

    it("throws on truncated input wherever fromBinary does, and agrees with it elsewhere", () => {
      for (const m of messages(schema, SEED + 4).slice(0, 30)) {
        const bytes = toBinary(schema, m);
        const step = Math.max(1, Math.floor(bytes.length / 40));
        for (let cut = 0; cut < bytes.length; cut += step) {
          const part = bytes.subarray(0, cut);
          if (throws(() => fromBinary(schema, part))) expect(throws(() => codec.decode(part))).toBe(true);
          else expect(codec.decode(part)).toEqual(fromBinary(schema, part));
        }
      }
    });

    const strings = schema.fields.filter((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING);
    if (strings.length > 0) {
      it("refuses malformed UTF-8 in strings, as fromBinary does", () => {
        for (const f of strings) {
          const bad = new Uint8Array([0x61, 0x80, 0x62, 0xe2, 0x82, 0x63, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98]);
          const bytes = new BinaryWriter().tag(f.number, WireType.LengthDelimited).bytes(bad).finish();
          expect(() => fromBinary(schema, bytes)).toThrow();
          expect(() => codec.decode(bytes)).toThrow();
        }
      });
    }
  });
}

export function describePlain<T extends object>(schema: DescMessage, codec: Codec<T>): void {
  const c = codec as unknown as Codec<Record<string, unknown>>;
  describe(`${schema.typeName}, plain codec`, () => {
    it("carries every field of the .proto", () => {
      expect(c.typeName).toBe(schema.typeName);
      expect([...c.fields]).toEqual(fieldNumbers(schema));
    });

    it("writes random messages (times on whole milliseconds) byte for byte as toBinary writes their exact form", () => {
      for (const m of messages(schema, SEED + 10, true)) {
        const plain = plainOf(schema, m as never);
        // The reference is the exact message the plain one stands for.
        const reference = toBinary(schema, create(schema, exactOf(schema, plain) as never));
        expect(same(toBinary(schema, m), reference)).toBe(true);
        const fast = c.encode(plain);
        if (!same(fast, reference)) expect(fast).toEqual(reference);
      }
    });

    it("reads random messages as fromBinary does, with times as whole milliseconds", () => {
      for (const m of messages(schema, SEED + 11)) {
        const bytes = toBinary(schema, m);
        expect(c.decode(bytes)).toEqual(plainOf(schema, fromBinary(schema, bytes) as never));
      }
    });

    it("skips fields it does not know", () => {
      for (const m of messages(schema, SEED + 12).slice(0, 50)) {
        const bytes = concat(toBinary(schema, m), unknownFields());
        expect(c.decode(bytes)).toEqual(plainOf(schema, fromBinary(schema, bytes) as never));
      }
    });
  });
}

/**
 * A view (jobwire.view.v1) reads the bytes of the message it views: its
 * fields must be a subset of that message's, and it must read any such
 * message as protobuf-es reads it with the view's schema.
 */
export function describeView<T extends object>(view: DescMessage, full: DescMessage, codec: Codec<T>, shape: "exact" | "plain"): void {
  const c = codec as unknown as Codec<Record<string, unknown>>;
  describe(`${view.typeName}, a view of ${full.typeName}`, () => {
    it(`has only fields of ${full.typeName}, with the same numbers, names and types`, () => {
      expect(viewMismatches(view, full)).toEqual([]);
    });

    it(`reads random ${full.typeName} messages as fromBinary(${view.typeName}) does`, () => {
      for (const m of messages(full, SEED + 20)) {
        const bytes = toBinary(full, m);
        const reference = fromBinary(view, bytes, { readUnknownFields: false });
        expect(c.decode(bytes)).toEqual(shape === "exact" ? reference : plainOf(view, reference as never));
      }
    });
  });
}

/** How view's fields differ from full's; empty when view is a faithful subset. */
function viewMismatches(view: DescMessage, full: DescMessage): string[] {
  const out: string[] = [];
  for (const vf of view.fields) {
    const ff = full.fields.find((f) => f.number === vf.number);
    const where = `${view.typeName}.${vf.name} (${vf.number})`;
    if (ff === undefined) {
      out.push(`${where}: no field ${vf.number} in ${full.typeName}`);
      continue;
    }
    if (ff.name !== vf.name) out.push(`${where}: named ${ff.name} in ${full.typeName}`);
    const problem = fieldMismatch(vf, ff);
    if (problem) out.push(`${where}: ${problem}`);
  }
  return out;
}

function fieldMismatch(vf: DescField, ff: DescField): string | undefined {
  // A bytes field may keep a message encoded: the same bytes on the wire.
  const keepsEncoded =
    (vf.fieldKind === "scalar" && vf.scalar === ScalarType.BYTES && ff.fieldKind === "message") ||
    (vf.fieldKind === "list" && vf.scalar === ScalarType.BYTES && ff.fieldKind === "list" && ff.listKind === "message");
  if (keepsEncoded) return undefined;
  if (vf.fieldKind !== ff.fieldKind) return `a ${vf.fieldKind} field here, a ${ff.fieldKind} field there`;
  if (vf.scalar !== ff.scalar) return "another scalar type";
  if (vf.enum?.typeName !== ff.enum?.typeName) return "another enum";
  if (vf.fieldKind === "map" && ff.fieldKind === "map" && vf.mapKey !== ff.mapKey) return "another map key type";
  const vm = vf.message;
  const fm = ff.message;
  if (vm === undefined || fm === undefined) return vm === fm ? undefined : "another message";
  if (vm.typeName === fm.typeName) return undefined;
  const nested = viewMismatches(vm, fm);
  return nested.length === 0 ? undefined : `its message is not a view of ${fm.typeName}: ${nested.join("; ")}`;
}

/** Timestamp or Duration to and from milliseconds, as protobuf-es's arithmetic does it. */
export function describeMillis(schema: DescMessage, write: (w: Writer, ms: number) => void, read: (r: Reader, end: number) => number): void {
  describe(`${schema.typeName} as milliseconds`, () => {
    const values = [0, 1, -1, 999, 1000, -1000, -1500, 1_795_491_000_123, -62_135_596_800_000, 30_500, 253_402_300_799_999];
    const timestamp = schema.typeName === "google.protobuf.Timestamp";
    it("writes whole milliseconds as toBinary writes the exact time", () => {
      for (const ms of values) {
        const w = new Writer();
        write(w, ms);
        const seconds = timestamp ? Math.floor(ms / 1000) : Math.trunc(ms / 1000);
        const exact = create(schema, { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 } as never);
        expect(w.finish()).toEqual(toBinary(schema, exact));
      }
    });

    it("reads back whole milliseconds, and drops what is below one", () => {
      for (const ms of values) {
        const w = new Writer();
        write(w, ms);
        const bytes = w.finish();
        expect(read(new Reader(bytes), bytes.length)).toBe(ms);
      }
      const bytes = toBinary(schema, create(schema, { seconds: 2n, nanos: 1_999_999 } as never));
      expect(read(new Reader(bytes), bytes.length)).toBe(2001);
    });
  });
}

/** Every unary RPC of the service has its codecs in the table, for its own request and response types. */
export function describeServiceCodecs(service: DescService, codecs: object): void {
  const table = codecs as Record<string, { input: Codec<unknown>; output: Codec<unknown> } | undefined>;
  describe(`${service.typeName} codec table`, () => {
    it("has the codecs of every unary RPC, each for its own messages", () => {
      for (const method of service.methods) {
        if (method.methodKind !== "unary") continue;
        const entry = table[method.localName];
        expect(entry, method.name).toBeDefined();
        expect(entry!.input.typeName).toBe(method.input.typeName);
        expect(entry!.output.typeName).toBe(method.output.typeName);
      }
    });
  });
}
