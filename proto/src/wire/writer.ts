/**
 * The protobuf binary writer behind every generated encoder (proto/fast/).
 * Generated code calls these methods field by field, in field-number order,
 * skipping fields at their default, so the bytes are those protobuf-es's
 * toBinary writes (the generated specs compare them on random messages).
 *
 * A Writer owns one growing Uint8Array; finish() hands out a view of it, so
 * a message is written without a copy at the end.
 */

const utf8 = new TextEncoder();

/** Strings up to this many UTF-16 units are written by the loop below; longer ones by TextEncoder. */
const SHORT_STRING = 42; // 42 units are at most 126 bytes: a one-byte length, known before writing

export class Writer {
  buf: Uint8Array;
  pos = 0;
  private view: DataView | undefined;

  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
  }

  /** Makes room for n more bytes. */
  need(n: number): void {
    if (this.pos + n > this.buf.length) this.grow(n);
  }

  private grow(n: number): void {
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = undefined;
  }

  /** The bytes written so far: a view, valid until this Writer writes again. */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /** One byte; tags below 16 fit in one (generated code writes every tag through tag()). */
  byte(b: number): void {
    this.need(1);
    this.buf[this.pos++] = b;
  }

  /** A tag, precomputed by the generator as (field number << 3) | wire type. */
  tag(t: number): void {
    if (t < 0x80) {
      this.need(1);
      this.buf[this.pos++] = t;
    } else this.varint(t);
  }

  /** An unsigned varint of a non-negative integer up to 2^53. */
  varint(v: number): void {
    this.need(8);
    const buf = this.buf;
    while (v > 0x7f) {
      buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[this.pos++] = v;
  }

  /** int32 and enums: negatives take ten bytes, sign-extended to 64 bits, as the spec requires. */
  int32(v: number): void {
    if ((v | 0) !== v) throw new Error(`invalid int32: ${v}`);
    if (v >= 0) {
      this.varint(v);
      return;
    }
    this.need(10);
    const buf = this.buf;
    // The low 32 bits, then the sign extension: 0xff.. in the remaining bits.
    let lo = v >>> 0;
    for (let i = 0; i < 4; i++) {
      buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo >>>= 7;
    }
    // Bits 28-31 of the value, then ones up to bit 63.
    buf[this.pos++] = (lo & 0x0f) | 0xf0;
    for (let i = 0; i < 4; i++) buf[this.pos++] = 0xff;
    buf[this.pos++] = 0x01;
  }

  uint32(v: number): void {
    if (v >>> 0 !== v) throw new Error(`invalid uint32: ${v}`);
    this.varint(v);
  }

  sint32(v: number): void {
    if ((v | 0) !== v) throw new Error(`invalid sint32: ${v}`);
    this.varint(((v << 1) ^ (v >> 31)) >>> 0);
  }

  bool(v: boolean): void {
    this.need(1);
    this.buf[this.pos++] = v ? 1 : 0;
  }

  /** int64 and uint64 as two's complement in a varint. */
  int64(v: bigint): void {
    if (v >= 0n && v <= 0x1fffffffffffffn) {
      this.varint(Number(v));
      return;
    }
    this.bigVarint(BigInt.asUintN(64, v));
  }

  /** int64 from a number (the seconds of a time in a plain shape): exact within ±2^53. */
  int64Number(v: number): void {
    if (v >= 0) this.varint(v);
    else this.bigVarint(BigInt.asUintN(64, BigInt(v)));
  }

  uint64(v: bigint): void {
    if (v < 0n || v > 0xffffffffffffffffn) throw new Error(`invalid uint64: ${v}`);
    this.int64(v);
  }

  sint64(v: bigint): void {
    this.bigVarint(BigInt.asUintN(64, (v << 1n) ^ (v >> 63n)));
  }

  private bigVarint(u: bigint): void {
    if (u > 0xffffffffffffffffn) throw new Error(`invalid int64: ${u}`);
    this.need(10);
    while (u > 0x7fn) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  private data(): DataView {
    this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    return this.view;
  }

  fixed32(v: number): void {
    if (v >>> 0 !== v) throw new Error(`invalid uint32: ${v}`);
    this.need(4);
    this.data().setUint32(this.pos, v, true);
    this.pos += 4;
  }

  sfixed32(v: number): void {
    if ((v | 0) !== v) throw new Error(`invalid int32: ${v}`);
    this.need(4);
    this.data().setInt32(this.pos, v, true);
    this.pos += 4;
  }

  fixed64(v: bigint): void {
    this.need(8);
    this.data().setBigUint64(this.pos, BigInt.asUintN(64, v), true);
    this.pos += 8;
  }

  sfixed64(v: bigint): void {
    this.fixed64(v);
  }

  float(v: number): void {
    // As protobuf-es: finite values beyond float32's range are refused, not rounded to infinity.
    if (Number.isFinite(v) && (v > 3.4028234663852886e38 || v < -3.4028234663852886e38)) {
      throw new Error(`invalid float32: ${v}`);
    }
    this.need(4);
    this.data().setFloat32(this.pos, v, true);
    this.pos += 4;
  }

  double(v: number): void {
    this.need(8);
    this.data().setFloat64(this.pos, v, true);
    this.pos += 8;
  }

  /** Length-prefixed bytes. */
  bytes(b: Uint8Array): void {
    const n = b.byteLength;
    this.varint(n);
    this.need(n);
    this.buf.set(b, this.pos);
    this.pos += n;
  }

  /**
   * Length-prefixed UTF-8, as TextEncoder writes it (a lone surrogate
   * becomes U+FFFD). Short strings, most of a job's, go through a loop:
   * about 40 ns against 55-60 for TextEncoder.encodeInto or Buffer#write,
   * which also need a view or a byte count first.
   */
  string(s: string): void {
    const n = s.length;
    if (n > SHORT_STRING) {
      this.longString(s);
      return;
    }
    this.need(1 + 3 * n);
    const buf = this.buf;
    const start = this.pos + 1;
    let p = start;
    for (let i = 0; i < n; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) {
        buf[p++] = c;
      } else if (c < 0x800) {
        buf[p++] = 0xc0 | (c >> 6);
        buf[p++] = 0x80 | (c & 0x3f);
      } else {
        if (c >= 0xd800 && c <= 0xdfff) {
          const next = i + 1 < n ? s.charCodeAt(i + 1) : 0;
          if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
            c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
            i++;
            buf[p++] = 0xf0 | (c >> 18);
            buf[p++] = 0x80 | ((c >> 12) & 0x3f);
            buf[p++] = 0x80 | ((c >> 6) & 0x3f);
            buf[p++] = 0x80 | (c & 0x3f);
            continue;
          }
          c = 0xfffd; // a lone surrogate
        }
        buf[p++] = 0xe0 | (c >> 12);
        buf[p++] = 0x80 | ((c >> 6) & 0x3f);
        buf[p++] = 0x80 | (c & 0x3f);
      }
    }
    buf[start - 1] = p - start;
    this.pos = p;
  }

  /** Room for the longest encoding and its length, then the length moved down if it took fewer bytes. */
  private longString(s: string): void {
    const max = 3 * s.length;
    const room = varintSize(max);
    this.need(room + max);
    const start = this.pos + room;
    const { written } = utf8.encodeInto(s, this.buf.subarray(start, start + max));
    const size = varintSize(written);
    if (size < room) this.buf.copyWithin(this.pos + size, start, start + written);
    this.varint(written);
    this.pos += written;
  }

  /**
   * Starts a length-delimited field's body (after its tag was written):
   * reserves one byte for the length, the usual case, and returns where it
   * is, for join(). A pair of calls rather than a callback: a closure per
   * nested message showed in the broker's profile at several per job.
   */
  fork(): number {
    this.need(1);
    return this.pos++;
  }

  /** Ends the body begun at lenAt: writes its length, moving the body up when the length needs more than a byte. */
  join(lenAt: number): void {
    const start = lenAt + 1;
    const len = this.pos - start;
    if (len < 0x80) {
      this.buf[lenAt] = len;
      return;
    }
    const extra = varintSize(len) - 1;
    this.need(extra);
    this.buf.copyWithin(start + extra, start, this.pos);
    this.pos = lenAt;
    this.varint(len);
    this.pos += len;
  }
}

export function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}
