import { Code, ConnectError } from "@connectrpc/connect";

/**
 * gRPC's Length-Prefixed-Message: one flag byte (bit 0: compressed), a
 * four-byte big-endian length, then the message. The lean path sends and
 * accepts only uncompressed messages; compressed calls go to connect-es.
 */
export const PREFIX_BYTES = 5;

/** One uncompressed message with its prefix. */
export function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(PREFIX_BYTES + body.length);
  const n = body.length;
  out[1] = n >>> 24;
  out[2] = (n >>> 16) & 0xff;
  out[3] = (n >>> 8) & 0xff;
  out[4] = n & 0xff;
  out.set(body, PREFIX_BYTES);
  return out;
}

function lengthAt(b: Uint8Array, at: number): number {
  return ((b[at + 1]! << 24) | (b[at + 2]! << 16) | (b[at + 3]! << 8) | b[at + 4]!) >>> 0;
}

/**
 * The one message of a unary call's body, as a plain Uint8Array view (so
 * that bytes fields decoded from it are not Buffers). The errors are what a
 * server answers; a client rewraps them.
 */
export function unaryMessage(body: Uint8Array, maxBytes: number): Uint8Array {
  if (body.length < PREFIX_BYTES) throw new ConnectError("protocol error: the body holds no message", Code.InvalidArgument);
  if (body[0]! & 1) throw new ConnectError("protocol error: compressed message without grpc-encoding", Code.InvalidArgument);
  const len = lengthAt(body, 0);
  if (len > maxBytes) throw new ConnectError(`message larger than ${maxBytes} bytes`, Code.ResourceExhausted);
  if (body.length !== PREFIX_BYTES + len) throw new ConnectError("protocol error: a unary body holds exactly one message", Code.InvalidArgument);
  return new Uint8Array(body.buffer, body.byteOffset + PREFIX_BYTES, len);
}

/**
 * Splits a stream's chunks into messages, which may straddle chunks. Each
 * message is a plain Uint8Array: a view of its chunk when it lies in one,
 * a copy joined from its pieces when not.
 */
export class MessageSplitter {
  private chunks: Uint8Array[] = [];
  private buffered = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Bytes held that do not yet make a whole message. */
  get pending(): number {
    return this.buffered;
  }

  /** The next whole message, or undefined until more bytes come. */
  next(): Uint8Array | undefined {
    if (this.buffered < PREFIX_BYTES) return undefined;
    const head = this.chunks[0]!.length >= PREFIX_BYTES ? this.chunks[0]! : this.take(PREFIX_BYTES, false);
    if (head[0]! & 1) throw new ConnectError("protocol error: compressed message without grpc-encoding", Code.Internal);
    const len = lengthAt(head, 0);
    if (len > this.maxBytes) throw new ConnectError(`message larger than configured readMaxBytes ${this.maxBytes}`, Code.ResourceExhausted);
    if (this.buffered < PREFIX_BYTES + len) return undefined;
    const first = this.chunks[0]!;
    if (first.length >= PREFIX_BYTES + len) {
      const msg = new Uint8Array(first.buffer, first.byteOffset + PREFIX_BYTES, len);
      this.drop(PREFIX_BYTES + len);
      return msg;
    }
    const all = this.take(PREFIX_BYTES + len, true);
    return all.subarray(PREFIX_BYTES);
  }

  /** The first n bytes as one array; removed from the buffer when consume is set. */
  private take(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of this.chunks) {
      const part = c.subarray(0, Math.min(c.length, n - at));
      out.set(part, at);
      at += part.length;
      if (at === n) break;
    }
    if (consume) this.drop(n);
    return out;
  }

  private drop(n: number): void {
    this.buffered -= n;
    let i = 0;
    while (n > 0 && this.chunks[i]!.length <= n) n -= this.chunks[i++]!.length;
    this.chunks.splice(0, i); // one splice: a shift per chunk was quadratic in a message of many small chunks
    if (n > 0) this.chunks[0] = this.chunks[0]!.subarray(n);
  }
}
