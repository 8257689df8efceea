/** Status codes and the length-prefixed envelope shared by gRPC, gRPC-Web and Connect streams. */
import { gzipSync } from "node:zlib";

export const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** "13" → "INTERNAL"; an unknown number stays visible as "grpc-status 99". */
export function grpcCodeName(status: string): string {
  const n = Number(status);
  return Number.isInteger(n) && n >= 0 && n < CODE_NAMES.length && String(n) === status.trim() ? CODE_NAMES[n]! : `grpc-status ${JSON.stringify(status)}`;
}

/** Connect's "invalid_argument" → "INVALID_ARGUMENT". */
export function connectCodeName(code: unknown): string {
  return typeof code === "string" ? code.toUpperCase() : `connect code ${JSON.stringify(code)}`;
}

/** The codes a target counts: the broker said "our fault" or "no idea". */
export const FAILING_CODES = new Set(["INTERNAL", "UNKNOWN"]);

export const FLAG_COMPRESSED = 0x01;
/** Connect streams: the end-of-stream message (JSON). */
export const FLAG_END_STREAM = 0x02;
/** gRPC-Web: the trailers frame. */
export const FLAG_TRAILERS = 0x80;

/** One envelope: flags, a 4-byte big-endian length (which may lie), the payload. */
export function envelope(payload: Uint8Array, flags = 0, length = payload.length): Buffer {
  const b = Buffer.allocUnsafe(5 + payload.length);
  b[0] = flags & 0xff;
  b.writeUInt32BE(length >>> 0, 1);
  b.set(payload, 5);
  return b;
}

export function gzip(payload: Uint8Array): Buffer {
  return gzipSync(payload);
}

export interface Envelope {
  flags: number;
  payload: Buffer;
}

/** Splits a body into envelopes; a trailing partial envelope is returned as `rest`. */
export function splitEnvelopes(body: Buffer): { envelopes: Envelope[]; rest: number } {
  const envelopes: Envelope[] = [];
  let off = 0;
  while (off + 5 <= body.length) {
    const len = body.readUInt32BE(off + 1);
    if (off + 5 + len > body.length) break;
    envelopes.push({ flags: body[off]!, payload: body.subarray(off + 5, off + 5 + len) });
    off += 5 + len;
  }
  return { envelopes, rest: body.length - off };
}

export const utf8 = new TextEncoder();

export function hex(b: Uint8Array, max = Infinity): string {
  const s = Buffer.from(b.subarray(0, Math.min(b.length, max))).toString("hex");
  return b.length > max ? `${s}… (${b.length} bytes)` : s;
}
