import type http from "node:http";
import type http2 from "node:http2";

/**
 * connect-es answers INTERNAL when it cannot read a request: a body that is
 * not the message it claims to be ("parse binary: premature EOF", "illegal
 * tag", invalid UTF-8, groups nested past the stack), or a compressed
 * envelope with no usable encoding. The caller sent what cannot be read, so
 * the answer is INVALID_ARGUMENT, as the lean path (and connect-es itself for
 * bad JSON) answers; INTERNAL is kept for faults of ours. connect-es has no
 * option for this, so the status is corrected where each protocol puts it,
 * on the way out of the calls connect-es serves:
 *
 *   gRPC        grpc-status in the headers (trailers-only) or the trailers
 *   gRPC-Web    the same in HTTP/1.1 headers, or in the trailer frame (flag 0x80)
 *   Connect     unary: HTTP 500 and {"code": "internal"} -> 400 and invalid_argument;
 *               streaming: the end-of-stream frame (flag 0x02) JSON
 *
 * A fuzzer found 358 INTERNAL answers in 3,000 requests on these paths
 * (test/chaos: npm run fuzz). Only messages that can come from reading the
 * request are matched; serializing a response fails with "serialize ...".
 */
const UNREADABLE = /^(parse binary: |received compressed envelope|decompression failed|protocol error: )/;

type Res = http.ServerResponse | http2.Http2ServerResponse;
type Headers = http.OutgoingHttpHeaders;

function fixHeaders(h: Headers | undefined): void {
  if (!h || String(h["grpc-status"]) !== "13") return;
  if (UNREADABLE.test(decodeURIComponent(String(h["grpc-message"] ?? "")))) h["grpc-status"] = "3";
}

/** A gRPC-Web trailer frame: flag 0x80, length, then "key: value\r\n" lines. */
function fixTrailerFrame(chunk: Buffer): Buffer {
  if (chunk.length < 5 || !(chunk[0]! & 0x80)) return chunk;
  const text = chunk.subarray(5).toString("latin1");
  const m = /grpc-message: ?([^\r\n]*)/i.exec(text);
  if (!/grpc-status: ?13\r\n/i.test(text) || !m || !UNREADABLE.test(decodeURIComponent(m[1]!))) return chunk;
  const body = Buffer.from(text.replace(/grpc-status: ?13\r\n/i, "grpc-status: 3\r\n"), "latin1");
  const out = Buffer.alloc(5 + body.length);
  out[0] = chunk[0]!;
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

/** A Connect end-of-stream frame (flag 0x02) with {"error": {...}}. */
function fixEndStream(chunk: Buffer): Buffer {
  if (chunk.length < 5 || chunk[0] !== 0x02) return chunk;
  try {
    const end = JSON.parse(chunk.subarray(5).toString("utf8")) as { error?: { code?: string; message?: string } };
    if (end.error?.code !== "internal" || !UNREADABLE.test(end.error.message ?? "")) return chunk;
    end.error.code = "invalid_argument";
    const body = Buffer.from(JSON.stringify(end));
    const out = Buffer.alloc(5 + body.length);
    out[0] = 0x02;
    out.writeUInt32BE(body.length, 1);
    body.copy(out, 5);
    return out;
  } catch {
    return chunk;
  }
}

/**
 * Wraps a response connect-es is about to write (connect-node calls
 * writeHead, then write for each chunk, then addTrailers and end). The
 * headers are held until the first chunk, so a Connect unary error's HTTP
 * status can follow its body.
 */
export function correctUnreadableStatus(res: Res): void {
  const r = res as http.ServerResponse;
  const writeHead = r.writeHead.bind(r) as (status: number, headers?: Headers) => unknown;
  const write = r.write.bind(r) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const end = r.end.bind(r) as (...args: unknown[]) => unknown;
  const addTrailers = r.addTrailers.bind(r);
  let held: { status: number; headers: Headers | undefined } | null = null;
  const flush = (first: Buffer | null): Buffer | null => {
    if (held === null) return first;
    let { status, headers } = held;
    held = null;
    fixHeaders(headers);
    const ct = String(headers?.["content-type"] ?? "");
    if (first && status >= 400 && ct.startsWith("application/json")) {
      try {
        const e = JSON.parse(first.toString("utf8")) as { code?: string; message?: string };
        if (e.code === "internal" && UNREADABLE.test(e.message ?? "")) {
          e.code = "invalid_argument";
          status = 400;
          first = Buffer.from(JSON.stringify(e));
          if (headers) delete headers["content-length"];
        }
      } catch {
        // not an error body
      }
    }
    writeHead(status, headers);
    return first;
  };
  const fixChunk = (chunk: unknown): unknown => {
    if (!(chunk instanceof Uint8Array)) return chunk;
    const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    return fixEndStream(fixTrailerFrame(b));
  };
  r.writeHead = ((status: number, headers?: Headers) => {
    held = { status, headers: headers ? { ...headers } : undefined };
    return r;
  }) as typeof r.writeHead;
  r.write = ((chunk: unknown, ...rest: unknown[]) => {
    const first = flush(chunk instanceof Uint8Array ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : null);
    return write(fixChunk(first ?? chunk), ...rest);
  }) as typeof r.write;
  r.end = ((...args: unknown[]) => {
    const chunk = args[0] instanceof Uint8Array ? (args[0] as Uint8Array) : null;
    const first = flush(chunk ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : null);
    if (chunk) args[0] = fixChunk(first);
    return end(...args);
  }) as typeof r.end;
  r.addTrailers = ((trailers: Headers) => {
    flush(null);
    fixHeaders(trailers);
    return addTrailers(trailers);
  }) as typeof r.addTrailers;
}
