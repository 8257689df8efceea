/**
 * The protobuf binary reader behind every generated decoder (proto/fast/).
 * Generated code reads a tag, switches on it, and calls the method for that
 * field's type; nested messages are read in place, up to the end that
 * sub() returns, with no Reader of their own.
 *
 * Reads are bounds-checked: truncated input throws, as fromBinary does.
 * Bytes fields come back as views of the input, as with fromBinary; copy
 * what must outlive it or must not expose its neighbours.
 */

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The default of a bytes field: one shared empty array (it has no bytes to change). */
export const EMPTY_BYTES = new Uint8Array(0);

/**
 * Node's Buffer, when there is one: Buffer#toString("utf8") takes about 70
 * ns for a job's short strings against 110 for TextDecoder on a subarray
 * (a view per string). Public API only. The Buffer view is made once per
 * ArrayBuffer, not per Reader: a lease batch's jobs, each read by a Reader
 * of its own, share one (65 ns a view, against about 1 µs to read a job).
 * The last one is kept until another input comes.
 */
interface Utf8Slicer {
  toString(encoding: "utf8", start: number, end: number): string;
}
const NodeBuffer = (globalThis as { Buffer?: { from(a: ArrayBufferLike): Utf8Slicer } }).Buffer;
let textOf: ArrayBufferLike | undefined;
let text: Utf8Slicer | undefined;

function utf8Text(buf: Uint8Array, start: number, end: number): string {
  if (NodeBuffer === undefined) return utf8.decode(buf.subarray(start, end));
  if (textOf !== buf.buffer) {
    text = NodeBuffer.from(buf.buffer);
    textOf = buf.buffer;
  }
  const s = text!.toString("utf8", buf.byteOffset + start, buf.byteOffset + end);
  // Buffer replaces malformed sequences with U+FFFD; only then is the strict decoder asked.
  return s.includes("\ufffd") ? utf8.decode(buf.subarray(start, end)) : s;
}

/**
 * The last string read in one field, reused while the bytes repeat: a
 * worker's jobs mostly share their queue, type and content type. Generated
 * plain decoders use one per field that buf.gen.yaml names (repeats=...).
 */
export class RepeatedString {
  private bytes: Uint8Array = new Uint8Array(0);
  private text = "";

  read(r: Reader): string {
    const n = r.varint();
    const at = r.pos;
    r.pos += n;
    if (r.pos > r.end) throw truncated();
    const last = this.bytes;
    const buf = r.buf;
    if (n === last.length) {
      let i = 0;
      while (i < n && buf[at + i] === last[i]) i++;
      if (i === n) return this.text;
    }
    this.text = n === 0 ? "" : utf8Text(buf, at, at + n);
    // At most 64 bytes kept: longer strings are read every time.
    this.bytes = n <= 64 ? buf.slice(at, at + n) : new Uint8Array(0);
    return this.text;
  }
}

export class Reader {
  pos: number;
  readonly end: number;
  private view: DataView | undefined;

  constructor(
    readonly buf: Uint8Array,
    start = 0,
    end = buf.length,
  ) {
    this.pos = start;
    this.end = end;
  }

  /** A varint as a number: exact up to 2^53; beyond, the low 32 bits are still right for int32 readers. */
  varint(): number {
    if (this.pos >= this.end) throw truncated();
    const buf = this.buf;
    let b = buf[this.pos++]!;
    if (b < 0x80) {
      if (this.pos > this.end) throw truncated();
      return b;
    }
    let result = b & 0x7f;
    let mul = 0x80;
    for (let i = 1; i < 10; i++) {
      b = buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (this.pos > this.end) throw truncated();
        return result;
      }
      mul *= 0x80;
    }
    throw new Error("invalid varint");
  }

  /** A tag; the generator switches on (field number << 3) | wire type. */
  tag(): number {
    const t = this.uint32();
    if (t >>> 3 === 0 || (t & 7) > 5) throw new Error(`illegal tag: field ${t >>> 3}, wire type ${t & 7}`);
    return t;
  }

  bool(): boolean {
    return this.varint() !== 0;
  }

  /** int32 and enums: a negative one is a ten-byte varint, whose low 32 bits are the value. */
  int32(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v | 0;
    return this.low32(start) | 0;
  }

  uint32(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v >>> 0;
    return this.low32(start) >>> 0;
  }

  sint32(): number {
    const v = this.uint32();
    return (v >>> 1) ^ -(v & 1);
  }

  /** The low 32 bits of the varint at start (read again bit by bit: a double loses them past 2^53). */
  private low32(start: number): number {
    const buf = this.buf;
    let v = 0;
    for (let i = 0; i < 5; i++) v |= (buf[start + i]! & 0x7f) << (7 * i);
    return v;
  }

  /** int64 as a bigint: one BigInt for up to 49 bits, which every timestamp is. */
  int64(): bigint {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start <= 7) return BigInt(v);
    return BigInt.asIntN(64, this.bigVarint(start));
  }

  uint64(): bigint {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start <= 7) return BigInt(v);
    return BigInt.asUintN(64, this.bigVarint(start));
  }

  sint64(): bigint {
    const u = this.uint64();
    return (u >> 1n) ^ -(u & 1n);
  }

  /** int64 as a number, for times read as milliseconds: exact within ±2^53, which any timestamp is. */
  int64Number(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v;
    return Number(BigInt.asIntN(64, this.bigVarint(start)));
  }

  private bigVarint(start: number): bigint {
    const buf = this.buf;
    let result = 0n;
    let shift = 0n;
    for (let i = start; i < this.pos; i++) {
      result |= BigInt(buf[i]! & 0x7f) << shift;
      shift += 7n;
    }
    return result;
  }

  private data(): DataView {
    this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    return this.view;
  }

  private advance(n: number): number {
    const at = this.pos;
    this.pos += n;
    if (this.pos > this.end) throw truncated();
    return at;
  }

  fixed32(): number {
    return this.data().getUint32(this.advance(4), true);
  }

  sfixed32(): number {
    return this.data().getInt32(this.advance(4), true);
  }

  fixed64(): bigint {
    return this.data().getBigUint64(this.advance(8), true);
  }

  sfixed64(): bigint {
    return this.data().getBigInt64(this.advance(8), true);
  }

  float(): number {
    return this.data().getFloat32(this.advance(4), true);
  }

  double(): number {
    return this.data().getFloat64(this.advance(8), true);
  }

  /** Length-prefixed bytes, as a view of the input. */
  bytes(): Uint8Array {
    const n = this.varint();
    const at = this.advance(n);
    return this.buf.subarray(at, at + n);
  }

  /**
   * Length-prefixed bytes, as a copy with its own ArrayBuffer: what plain
   * decoders return, so that a plain message neither pins its input nor
   * exposes the bytes around it through .buffer.
   */
  bytesCopy(): Uint8Array {
    const n = this.varint();
    const at = this.advance(n);
    return n === 0 ? EMPTY_BYTES : this.buf.slice(at, at + n);
  }

  /** Length-prefixed UTF-8. Malformed UTF-8 throws, as fromBinary does for proto3 strings. */
  string(): string {
    const n = this.varint();
    const at = this.advance(n);
    return n === 0 ? "" : utf8Text(this.buf, at, at + n);
  }

  /** Starts a nested message: returns where it ends; the caller reads fields until pos reaches it. */
  sub(): number {
    const n = this.varint(); // read first: "this.pos + this.varint()" would add to the old pos
    const end = this.pos + n;
    if (end > this.end) throw truncated();
    return end;
  }

  /** Checks that a nested message ended where its length said. */
  done(end: number): void {
    if (this.pos !== end) throw new Error("invalid nested message: a field runs past its end");
  }

  /** Skips a field this decoder does not read (from a newer schema, or of another message's view). */
  skip(tag: number): void {
    switch (tag & 7) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2: {
        const n = this.varint(); // read first: "this.pos += this.varint()" would add to the old pos
        this.advance(n);
        return;
      }
      case 3: {
        // A group: skip fields up to its end tag.
        for (;;) {
          const t = this.varint();
          if ((t & 7) === 4) {
            if (t >>> 3 !== tag >>> 3) throw new Error("invalid end group tag");
            return;
          }
          this.skip(t);
        }
      }
      case 5:
        this.advance(4);
        return;
      default:
        throw new Error(`cannot skip wire type ${tag & 7}`);
    }
  }
}

function truncated(): Error {
  return new Error("premature end of input");
}
