import { ScalarType, create, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

/**
 * Random protobuf-es messages of any schema, for the differential specs:
 * every field is left unset, set to its zero, or set to a value drawn from
 * the awkward ones (negatives, the ends of each range, unicode with astral
 * characters and lone surrogates, empty and large bytes, maps with an empty
 * key), so that a field no codec writes shows up as a byte difference.
 */

/** mulberry32: small, seeded, so every run checks the same messages. */
export function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface RandomOptions {
  /** Timestamps and Durations on whole milliseconds, canonical (what a plain shape can carry exactly). */
  msTimes?: boolean;
}

const MAX_DEPTH = 4;

export class RandomMessages {
  private readonly r: () => number;

  constructor(
    seed: number,
    private readonly opts: RandomOptions = {},
  ) {
    this.r = random(seed);
  }

  private pick<T>(...xs: T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }

  private int(max: number): number {
    return Math.floor(this.r() * max);
  }

  message<D extends DescMessage>(schema: D, depth = 0): MessageShape<D> {
    return create(schema, this.init(schema, depth) as never);
  }

  private init(schema: DescMessage, depth: number): Record<string, unknown> {
    if (schema.typeName === "google.protobuf.Timestamp") return this.timestamp();
    if (schema.typeName === "google.protobuf.Duration") return this.duration();
    const init: Record<string, unknown> = {};
    for (const member of schema.members) {
      if (member.kind === "oneof") {
        const i = this.int(member.fields.length + 1);
        const f = member.fields[i];
        if (f !== undefined) init[member.localName] = { case: f.localName, value: this.single(f, depth) };
        continue;
      }
      const f = member;
      const roll = this.r();
      if (roll < 0.2) continue; // unset
      if (f.fieldKind === "list") {
        init[f.localName] = Array.from({ length: this.pick(0, 1, 2, 3, 5) }, () => this.element(f, depth));
      } else if (f.fieldKind === "map") {
        const map: Record<string, unknown> = {};
        for (let i = this.pick(0, 1, 2, 4); i > 0; i--) map[this.mapKey(f.mapKey)] = this.element(f, depth);
        init[f.localName] = map;
      } else if (f.fieldKind === "message" && depth >= MAX_DEPTH) {
      } else if (roll < 0.3 && f.fieldKind !== "message") {
        init[f.localName] = this.zero(f); // set to its zero: present for optional fields, absent on the wire otherwise
      } else {
        init[f.localName] = this.single(f, depth);
      }
    }
    return init;
  }

  private zero(f: DescField): unknown {
    if (f.fieldKind === "enum") return 0;
    if (f.fieldKind !== "scalar") return undefined;
    return scalarZero(f.scalar);
  }

  private single(f: DescField, depth: number): unknown {
    if (f.fieldKind === "message") return this.init(f.message, depth + 1);
    if (f.fieldKind === "enum") return this.enumValue(f.enum.values.map((v) => v.number));
    if (f.fieldKind === "scalar") return this.scalar(f.scalar);
    throw new Error(`not a singular field: ${f.name}`);
  }

  private element(f: DescField, depth: number): unknown {
    if (f.fieldKind === "list" || f.fieldKind === "map") {
      const kind = f.fieldKind === "list" ? f.listKind : f.mapKind;
      if (kind === "message") return this.init(f.message!, depth + 1);
      if (kind === "enum") return this.enumValue(f.enum!.values.map((v) => v.number));
      return this.scalar(f.scalar!);
    }
    throw new Error(`not a list or map: ${f.name}`);
  }

  /** Known values, and unknown ones (proto3 enums are open). */
  private enumValue(known: number[]): number {
    return this.r() < 0.8 ? this.pick(...known) : this.pick(-1, 99, 2 ** 31 - 1);
  }

  private mapKey(t: ScalarType): string {
    switch (t) {
      case ScalarType.STRING:
        return this.string();
      case ScalarType.BOOL:
        return this.pick("true", "false");
      default:
        return String(this.scalar(t));
    }
  }

  string(): string {
    return this.pick(
      "",
      "q",
      "emails.send:v2-x",
      "send_welcome_email",
      "ключ ✓",
      "τύπος-".repeat(12),
      "x".repeat(42),
      "x".repeat(43),
      "y".repeat(300),
      "emoji 😀 and 𝄞",
      "lone \ud800 surrogate",
      "\udc00 lone low",
      "nul\u0000inside",
      "1.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10",
    );
  }

  private bytes(): Uint8Array {
    const n = this.pick(0, 1, 2, 127, 128, 300, 70_000, this.r() < 0.05 ? 1 << 20 : 10);
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (i * 31 + n) & 0xff;
    return b;
  }

  private scalar(t: ScalarType): unknown {
    switch (t) {
      case ScalarType.STRING:
        return this.string();
      case ScalarType.BYTES:
        return this.bytes();
      case ScalarType.BOOL:
        return this.r() < 0.5;
      case ScalarType.DOUBLE:
        return this.pick(0, -0, 1.5, -2.25, 1e308, -1e-308, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, this.r() * 1e6);
      case ScalarType.FLOAT:
        return Math.fround(this.pick(0, 1.5, -2.25, 3.4e38, -1e-30, Number.NaN, Number.POSITIVE_INFINITY, this.r() * 1e6));
      case ScalarType.INT32:
      case ScalarType.SINT32:
      case ScalarType.SFIXED32:
        return this.pick(0, 1, -1, 127, 128, 300, -300, 2 ** 31 - 1, -(2 ** 31), this.int(1e9) - 5e8);
      case ScalarType.UINT32:
      case ScalarType.FIXED32:
        return this.pick(0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1, this.int(4e9));
      case ScalarType.INT64:
      case ScalarType.SINT64:
      case ScalarType.SFIXED64:
        return this.pick(0n, 1n, -1n, 128n, 2n ** 49n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), BigInt(this.int(1e12)) - 500_000_000_000n);
      case ScalarType.UINT64:
      case ScalarType.FIXED64:
        return this.pick(0n, 1n, 128n, 2n ** 53n + 1n, 2n ** 64n - 1n, BigInt(this.int(1e12)));
    }
  }

  /** Seconds from before 1970 to far ahead; nanos anywhere in range, or on a millisecond. */
  private timestamp(): Record<string, unknown> {
    const seconds = BigInt(this.pick(0, 1, -1, -62_135_596_800, 1_795_000_000, 253_402_300_799, this.int(4e9) - 1e9));
    const nanos = this.opts.msTimes ? this.int(1000) * 1_000_000 : this.pick(0, 1, 999_999_999, 500_000_000, this.int(1e9));
    return this.r() < 0.1 ? {} : { seconds, nanos };
  }

  /** Durations of either sign, seconds and nanos with the same sign (canonical) for msTimes. */
  private duration(): Record<string, unknown> {
    const s = this.pick(0, 1, 30, 86_400, -5, 315_576_000_000, this.int(1e6));
    const ms = this.opts.msTimes ? this.int(1000) * 1_000_000 : this.pick(0, 1, 999_999_999, this.int(1e9));
    const nanos = s < 0 || (s === 0 && this.r() < 0.3) ? -ms : ms;
    return this.r() < 0.1 ? {} : { seconds: BigInt(s), nanos: s > 0 && nanos < 0 ? -nanos : nanos };
  }
}

export function scalarZero(t: ScalarType): unknown {
  switch (t) {
    case ScalarType.STRING:
      return "";
    case ScalarType.BYTES:
      return new Uint8Array(0);
    case ScalarType.BOOL:
      return false;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 0n;
    default:
      return 0;
  }
}
