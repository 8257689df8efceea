/**
 * Mutations of valid protobuf bytes: bit flips, truncation, wrong wire
 * types, huge and overlong varints, length prefixes that lie, invalid field
 * numbers, deeply nested groups, invalid UTF-8 in strings.
 */
import type { Rng } from "../common/rng.js";

interface FieldSpan {
  start: number;
  /** End of the tag varint. */
  tagEnd: number;
  field: number;
  wireType: number;
  /** For length-delimited fields: where the length varint ends (the payload starts). */
  lenEnd?: number;
  end: number;
}

function readVarint(b: Uint8Array, off: number): [bigint, number] | null {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (off + i >= b.length) return null;
    const byte = b[off + i]!;
    v |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [v, off + i + 1];
  }
  return null;
}

export function varint(v: bigint): number[] {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) byte |= 0x80;
    out.push(byte);
  } while (x > 0n);
  return out;
}

function tag(field: number, wireType: number): number[] {
  return varint((BigInt(field) << 3n) | BigInt(wireType));
}

/** The top-level fields of a message, as far as they parse. */
function scan(b: Uint8Array): FieldSpan[] {
  const out: FieldSpan[] = [];
  let off = 0;
  while (off < b.length) {
    const t = readVarint(b, off);
    if (!t) break;
    const [key, tagEnd] = t;
    const wireType = Number(key & 7n);
    const field = Number(key >> 3n);
    let end: number;
    let lenEnd: number | undefined;
    if (wireType === 0) {
      const v = readVarint(b, tagEnd);
      if (!v) break;
      end = v[1];
    } else if (wireType === 1) end = tagEnd + 8;
    else if (wireType === 5) end = tagEnd + 4;
    else if (wireType === 2) {
      const l = readVarint(b, tagEnd);
      if (!l) break;
      lenEnd = l[1];
      end = lenEnd + Number(l[0]);
    } else break;
    if (end > b.length) break;
    out.push({ start: off, tagEnd, field, wireType, ...(lenEnd !== undefined ? { lenEnd } : {}), end });
    off = end;
  }
  return out;
}

function splice(b: Uint8Array, start: number, end: number, insert: number[] | Uint8Array): Uint8Array {
  const ins = insert instanceof Uint8Array ? insert : Uint8Array.from(insert);
  const out = new Uint8Array(b.length - (end - start) + ins.length);
  out.set(b.subarray(0, start), 0);
  out.set(ins, start);
  out.set(b.subarray(end), start + ins.length);
  return out;
}

type Mutator = (b: Uint8Array, rng: Rng) => [Uint8Array, string];

const MUTATORS: Record<string, Mutator> = {
  "bit flips": (b, rng) => {
    const out = Uint8Array.from(b);
    const n = rng.range(1, 8);
    for (let i = 0; i < n && out.length > 0; i++) out[rng.int(out.length)]! ^= 1 << rng.int(8);
    return [out, `${n} bit(s) flipped`];
  },
  "interesting bytes": (b, rng) => {
    const out = Uint8Array.from(b);
    const n = rng.range(1, 4);
    for (let i = 0; i < n && out.length > 0; i++) out[rng.int(out.length)] = rng.pick([0x00, 0xff, 0x7f, 0x80, 0x01]);
    return [out, `${n} byte(s) set to 00/ff/7f/80/01`];
  },
  truncated: (b, rng) => {
    const at = b.length === 0 ? 0 : rng.int(b.length);
    return [b.subarray(0, at), `truncated to ${at} of ${b.length} bytes`];
  },
  "garbage appended": (b, rng) => {
    const g = rng.bytes(rng.range(1, 64));
    return [splice(b, b.length, b.length, g), `${g.length} random bytes appended`];
  },
  "wrong wire type": (b, rng) => {
    const fields = scan(b);
    if (fields.length === 0) return [Uint8Array.from([...tag(1, 0), 1]), "empty message; field 1 as a varint"];
    const f = rng.pick(fields);
    const wt = rng.pick([0, 1, 2, 3, 4, 5, 6, 7].filter((w) => w !== f.wireType));
    return [splice(b, f.start, f.tagEnd, tag(f.field, wt)), `field ${f.field}: wire type ${f.wireType} sent as ${wt}`];
  },
  "huge varint": (b, rng) => {
    const field = rng.range(1, 12);
    const bytes = rng.bool() ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] : [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    return [splice(b, 0, 0, [...tag(field, 0), ...bytes]), `field ${field}: a ${bytes.length}-byte varint (${bytes.length > 10 ? "overlong, invalid" : "2^64-1"})`];
  },
  "length that lies": (b, rng) => {
    const lens = scan(b).filter((f) => f.lenEnd !== undefined);
    if (lens.length === 0) return [Uint8Array.from([...tag(1, 2), ...varint(1000n), 1, 2, 3]), "field 1 claims 1000 bytes, holds 3"];
    const f = rng.pick(lens);
    const real = f.end - f.lenEnd!;
    const claim = rng.pick([real + 1, real + 1000, Math.max(0, real - 1), 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32 + real]);
    return [splice(b, f.tagEnd, f.lenEnd!, varint(BigInt(claim))), `field ${f.field}: length prefix ${claim}, payload ${real} bytes`];
  },
  "invalid field number": (b, rng) => {
    const field = rng.pick([0, 2 ** 29 - 1, 2 ** 29, 19000, 2 ** 32]);
    return [splice(b, 0, 0, [...varint((BigInt(field) << 3n) | 0n), 1]), `field number ${field}`];
  },
  "nested groups": (b, rng) => {
    const depth = rng.pick([100, 10_000, 100_000]);
    const open = tag(99, 3);
    const body = new Uint8Array(open.length * depth);
    for (let i = 0; i < depth; i++) body.set(open, i * open.length);
    return [splice(b, b.length, b.length, body), `${depth} nested start-group tags, never closed`];
  },
  "nested messages": (b, rng) => {
    // field 99 holding field 99 holding ... (unknown fields), 2 bytes each level.
    const depth = rng.pick([100, 1000]);
    let inner: number[] = [];
    for (let i = 0; i < depth; i++) inner = [...tag(99, 2), ...varint(BigInt(inner.length)), ...inner];
    return [splice(b, b.length, b.length, inner), `${depth} levels of nested unknown messages`];
  },
  "invalid utf-8": (b, rng) => {
    const lens = scan(b).filter((f) => f.lenEnd !== undefined && f.end > f.lenEnd);
    if (lens.length === 0) return [Uint8Array.from([...tag(1, 2), 2, 0xc3, 0x28]), "field 1: invalid UTF-8"];
    const f = rng.pick(lens);
    const out = Uint8Array.from(b);
    out[f.lenEnd! + rng.int(f.end - f.lenEnd!)] = rng.pick([0xff, 0xc3, 0xed]);
    return [out, `field ${f.field}: invalid UTF-8 byte`];
  },
  "end-group without start": (b) => [splice(b, 0, 0, tag(7, 4)), "an end-group tag with no group open"],
  "field repeated": (b, rng) => {
    const fields = scan(b);
    if (fields.length === 0) return [b, "nothing to repeat"];
    const f = rng.pick(fields);
    const copy = b.subarray(f.start, f.end);
    const n = rng.pick([2, 100, 5000]);
    const rep = new Uint8Array(copy.length * n);
    for (let i = 0; i < n; i++) rep.set(copy, i * copy.length);
    return [splice(b, b.length, b.length, rep), `field ${f.field} repeated ${n} times`];
  },
};

export const PROTO_MUTATIONS = Object.keys(MUTATORS);

export function mutateProto(b: Uint8Array, rng: Rng): [Uint8Array, string] {
  const name = rng.pick(PROTO_MUTATIONS);
  const [out, what] = MUTATORS[name]!(b, rng);
  return [out, `${name}: ${what}`];
}

/** A random sequence of plausible fields (any number, any wire type). */
export function randomProto(rng: Rng): Uint8Array {
  const out: number[] = [];
  const n = rng.range(1, 8);
  for (let i = 0; i < n; i++) {
    const field = rng.range(1, 25);
    const wt = rng.pick([0, 1, 2, 5]);
    out.push(...tag(field, wt));
    if (wt === 0) out.push(...varint(BigInt(rng.next()) * BigInt(rng.next())));
    else if (wt === 1) out.push(...rng.bytes(8));
    else if (wt === 5) out.push(...rng.bytes(4));
    else {
      const len = rng.int(20);
      out.push(...varint(BigInt(len)), ...rng.bytes(len));
    }
  }
  return Uint8Array.from(out);
}
