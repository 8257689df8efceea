import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2Sessions } from "./client-unary.js";
import { headersOf, listen, single } from "./client-unary.js";
import { MessageSplitter, frame } from "./envelope.js";
import { codeFromHttpStatus, errorFromStatus } from "./status.js";
import { MAX_TIMER_MS, grpcTimeout } from "./timeout.js";

/**
 * A streaming gRPC call on an HTTP/2 session, with the caller's own codecs:
 * the TypeScript worker's Lease stream, whose responses it reads as raw
 * batches (jobwire.view.v1.RawLeaseResponse) rather than as protobuf-es
 * messages. It behaves as connect-es's stream does where the worker relies
 * on it:
 *
 * - flow control: the HTTP/2 stream is paused while a message waits to be
 *   taken, so a slow reader stops the broker through HTTP/2's window;
 * - requests are written as the iterable yields them, waiting for "drain",
 *   and its end half-closes the stream;
 * - the signal, the deadline, or the reader leaving early cancel the call
 *   (RST_STREAM CANCEL), and the error says which;
 * - keepalive: reads are reported to the session, whose PINGs find a dead
 *   connection, which then fails the call;
 * - statuses, trailers-only responses and HTTP/2 resets become the same
 *   ConnectErrors (code, message, details, metadata).
 *
 * The request's headers (authorization, trace context) are the caller's to
 * set: connect-es interceptors take protobuf-es messages, which this call
 * never makes.
 */
export interface LeanStreamOptions {
  sessions: Http2Sessions;
  readMaxBytes: number;
  writeMaxBytes: number;
  userAgent: string;
}

export interface StreamCall {
  signal?: AbortSignal;
  /** A deadline for the whole stream; 0 or undefined for none. */
  timeoutMs?: number;
  header?: Headers;
  /** Called with the response headers, once the server has accepted the call. */
  onHeader?: (header: Headers) => void;
}

export async function* leanStream<I, O>(
  opts: LeanStreamOptions,
  path: string,
  requests: AsyncIterable<I>,
  encode: (m: I) => Uint8Array,
  decode: (bytes: Uint8Array) => O,
  call: StreamCall = {},
): AsyncGenerator<O, void, undefined> {
  const signal = call.signal;
  if (signal?.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
  const headers: http2.OutgoingHttpHeaders = {
    "content-type": "application/grpc+proto",
    te: "trailers",
    "user-agent": opts.userAgent,
  };
  call.header?.forEach((v, k) => {
    headers[k] = v;
  });
  const timeoutMs = call.timeoutMs !== undefined && call.timeoutMs > 0 ? call.timeoutMs : undefined;
  if (timeoutMs !== undefined) headers["grpc-timeout"] = grpcTimeout(timeoutMs);

  let stream: http2.ClientHttp2Stream;
  try {
    stream = await opts.sessions.request("POST", path, headers, {});
  } catch (err) {
    throw ConnectError.from(err, Code.Unavailable);
  }
  const inbox = new Inbox<O>(stream);
  const splitter = new MessageSplitter(opts.readMaxBytes);
  let responseHeaders: http2.IncomingHttpHeaders | undefined;
  let trailers: http2.IncomingHttpHeaders | undefined;

  const cancel = (err: ConnectError) => {
    inbox.fail(err);
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  const onAbort = () => cancel(ConnectError.from(signal!.reason, Code.Canceled));
  if (signal) listen(signal, onAbort);
  const timer =
    timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS
      ? setTimeout(() => cancel(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), timeoutMs)
      : undefined;

  stream.on("response", (h) => {
    responseHeaders = h;
    const status = Number(h[":status"]);
    const meta = headersOf(h);
    if (status !== 200) {
      cancel(new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status), meta));
      return;
    }
    const ct = single(h, "content-type") ?? "";
    if (!/^application\/grpc(\+proto)?(;|$)/i.test(ct)) {
      cancel(new ConnectError(`unsupported content type ${ct}`, Code.Unknown, meta));
      return;
    }
    // A trailers-only response: the status is here, and no message follows.
    if (single(h, "grpc-status") !== undefined) return;
    call.onHeader?.(meta);
  });
  stream.on("trailers", (t) => {
    trailers = t;
  });
  stream.on("data", (chunk: Buffer) => {
    opts.sessions.notifyResponseByteRead(stream);
    splitter.push(chunk);
    try {
      for (let m = splitter.next(); m !== undefined; m = splitter.next()) inbox.push(decode(m));
    } catch (err) {
      cancel(err instanceof ConnectError ? err : ConnectError.from(err, Code.Internal));
    }
  });
  stream.on("error", (err) => inbox.fail(streamError(err, stream.rstCode, connectionLost(stream))));
  /** The call's status, once the response has ended; false when it carries none (a reset, a lost connection). */
  const settle = (): boolean => {
    const h = responseHeaders;
    if (h === undefined) return false;
    const t = trailers ?? h;
    if (single(t, "grpc-status") === undefined) return false;
    const meta = headersOf(h);
    if (trailers) headersOf(trailers, meta);
    const err = errorFromStatus((name) => single(t, name), meta);
    if (err !== undefined) inbox.fail(err);
    else if (splitter.pending > 0) inbox.fail(new ConnectError("protocol error: the stream ended inside a message", Code.Internal, meta));
    else inbox.end();
    return true;
  };
  // The response has ended (every message read, then the trailers). The
  // call is over, though our side may still be open: a worker's requests
  // go on until it stops. Waiting for the stream to close instead left a
  // refusal unseen until the broker reset the half-open stream, 1 s later.
  stream.on("end", () => {
    if (settle() && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
  stream.on("close", () => {
    if (settle()) return;
    const lost = connectionLost(stream);
    if (responseHeaders === undefined) {
      inbox.fail(
        (lost ? undefined : resetError(stream.rstCode)) ??
          new ConnectError(`the stream closed without a response (HTTP/2 code ${stream.rstCode})`, Code.Unavailable),
      );
      return;
    }
    const meta = headersOf(responseHeaders);
    if (trailers) headersOf(trailers, meta);
    // Cut off before its status: the connection went (UNAVAILABLE, which
    // the worker answers by reconnecting) or the peer reset the stream.
    if (lost || trailers === undefined) {
      inbox.fail((lost ? undefined : resetError(stream.rstCode)) ?? new ConnectError("the connection closed before the call's status arrived", Code.Unavailable, meta));
      return;
    }
    inbox.fail(new ConnectError("protocol error: missing status", Code.Internal, meta));
  });

  void pump(stream, requests, encode, opts.writeMaxBytes).catch((err: unknown) => cancel(ConnectError.from(err, Code.Internal)));

  try {
    for (;;) {
      const r = await inbox.next();
      if (r.done) return;
      yield r.value;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (timer !== undefined) clearTimeout(timer);
    // Left early, by the reader or an error: cancel what is still open.
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

/** Writes the requests as they come, respecting backpressure; their end half-closes the stream. */
async function pump<I>(stream: http2.ClientHttp2Stream, requests: AsyncIterable<I>, encode: (m: I) => Uint8Array, maxBytes: number): Promise<void> {
  for await (const m of requests) {
    if (stream.closed || stream.destroyed) return;
    const body = encode(m);
    if (body.length > maxBytes) throw new ConnectError(`message size ${body.length} is larger than configured writeMaxBytes ${maxBytes}`, Code.ResourceExhausted);
    if (!stream.write(frame(body))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          stream.off("drain", done);
          stream.off("close", done);
          resolve();
        };
        stream.once("drain", done);
        stream.once("close", done);
      });
    }
  }
  if (!stream.closed && !stream.destroyed) stream.end();
}

/**
 * Decoded messages waiting for the reader. While one waits, the HTTP/2
 * stream is paused: the broker's window then fills, and it stops sending.
 */
class Inbox<T> {
  private readonly items: T[] = [];
  private error: ConnectError | undefined;
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(private readonly stream: http2.ClientHttp2Stream) {}

  push(item: T): void {
    if (this.error !== undefined || this.ended) return;
    this.items.push(item);
    this.stream.pause();
    this.notify();
  }

  fail(err: ConnectError): void {
    if (this.error !== undefined || this.ended) return;
    this.error = err;
    this.notify();
  }

  end(): void {
    if (this.error !== undefined) return;
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async next(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      // Messages that arrived before an error or the end are still read, as with connect-es.
      if (this.items.length > 0) {
        const value = this.items.shift()!;
        if (this.items.length === 0) this.stream.resume();
        return { done: false, value };
      }
      if (this.error !== undefined) throw this.error;
      if (this.ended) return { done: true, value: undefined };
      this.stream.resume();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}

/** RST_STREAM codes as connect-node maps them (gRPC's PROTOCOL-HTTP2 "Errors"); NO_ERROR and STREAM_CLOSED map to nothing. */
function resetError(rstCode: number | undefined): ConnectError | undefined {
  const c = http2.constants;
  const message = `http/2 stream closed with error code ${rstCode}`;
  switch (rstCode) {
    case c.NGHTTP2_PROTOCOL_ERROR:
    case c.NGHTTP2_INTERNAL_ERROR:
    case c.NGHTTP2_FLOW_CONTROL_ERROR:
    case c.NGHTTP2_SETTINGS_TIMEOUT:
    case c.NGHTTP2_FRAME_SIZE_ERROR:
    case c.NGHTTP2_COMPRESSION_ERROR:
    case c.NGHTTP2_CONNECT_ERROR:
      return new ConnectError(message, Code.Internal);
    case c.NGHTTP2_REFUSED_STREAM:
      return new ConnectError(message, Code.Unavailable);
    case c.NGHTTP2_CANCEL:
      return new ConnectError(message, Code.Canceled);
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return new ConnectError(message, Code.ResourceExhausted);
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      return new ConnectError(message, Code.PermissionDenied);
    default:
      return undefined;
  }
}

/**
 * Whether the stream's connection is gone. Node then closes the stream
 * itself with CANCEL, which is not the peer cancelling the call: without
 * this, a broker that died looked like CANCELED rather than UNAVAILABLE.
 */
function connectionLost(stream: http2.ClientHttp2Stream): boolean {
  const session = stream.session;
  return session === undefined || session.destroyed || session.closed;
}

/**
 * A reset the server sent says what happened (ERR_HTTP2_STREAM_ERROR);
 * the session manager's own errors (a PING unanswered) are ConnectErrors
 * already; any other failure of the stream or its connection is
 * UNAVAILABLE, which the worker answers by reconnecting.
 */
function streamError(err: unknown, rstCode: number | undefined, lost: boolean): ConnectError {
  if (err instanceof ConnectError) return err;
  if (!lost && (err as { code?: unknown } | null)?.code === "ERR_HTTP2_STREAM_ERROR") {
    const reset = resetError(rstCode);
    if (reset) return reset;
  }
  return ConnectError.from(err, Code.Unavailable);
}
