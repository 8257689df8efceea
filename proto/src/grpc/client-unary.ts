import { setMaxListeners } from "node:events";
import http2 from "node:http2";
import {
  create,
  fromBinary,
  isMessage,
  toBinary,
  type DescMessage,
  type DescMethodUnary,
  type DescService,
  type Message,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type Interceptor,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { ServiceCodecs } from "../wire/codec.js";
import { PREFIX_BYTES, frame } from "./envelope.js";
import { codeFromHttpStatus, errorFromStatus } from "./status.js";
import { MAX_TIMER_MS, grpcTimeout } from "./timeout.js";

/**
 * Unary gRPC calls straight on an HTTP/2 session, skipping connect-es's
 * per-call machinery, which costs a producer about 0.5-1 ms of CPU per
 * Enqueue. A unary gRPC call is one length-prefixed message each way plus
 * a status in the trailers. Interceptors run as they would in connect-es.
 */

/** What the lean client needs of an HTTP/2 connection; connect-node's Http2SessionManager has it. */
export interface Http2Sessions {
  request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream>;
  /** Tells the keepalive logic that the connection is alive (so it sends no PING). */
  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void;
}

export interface LeanClientOptions {
  baseUrl: string;
  sessions: Http2Sessions;
  interceptors: Interceptor[];
  readMaxBytes: number;
  writeMaxBytes: number;
  userAgent: string;
  /** The generated codec tables (proto/fast); methods without one are coded by protobuf-es reflection. */
  services: { service: DescService; codecs: ServiceCodecs<DescService> }[];
}

type Next = Parameters<Interceptor>[0];
type Coder = { encode: (m: Message) => Uint8Array; decode: (b: Uint8Array) => Message };

const NEVER = new AbortController().signal;

/** A Transport whose unary calls take the lean path; streams go to the given transport. */
export function withLeanUnary(streams: Transport, opts: LeanClientOptions): Transport {
  const base = opts.baseUrl.replace(/\/+$/, "");
  const coders = new Map<string, { input: Coder; output: Coder }>();
  for (const { service, codecs } of opts.services) {
    for (const method of service.methods) {
      const c = codecs[method.localName];
      if (c === undefined) continue;
      if (c.input.typeName !== method.input.typeName || c.output.typeName !== method.output.typeName) {
        throw new Error(`the codecs given for ${service.typeName}.${method.name} are for other messages`);
      }
      coders.set(pathOf(method), { input: c.input, output: c.output });
    }
  }
  return {
    stream: (...args) => streams.stream(...args),
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const path = pathOf(method);
      const coder = coders.get(path) ?? reflection(method);
      const req: UnaryRequest<I, O> = {
        stream: false,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `${base}${path}`,
        signal: signal ?? NEVER,
        header: new Headers(header),
        contextValues: contextValues ?? createContextValues(),
        message: isMessage(input, method.input) ? input : create(method.input, input),
      };
      // The chain is made per call, so that the deadline reaches send() without riding on the request.
      const chain = opts.interceptors.reduceRight<Next>(
        (next, interceptor) => interceptor(next),
        (r) => (r.stream ? Promise.reject(new ConnectError("a stream on the unary path", Code.Internal)) : send(opts, r, path, coder, timeoutMs)),
      );
      const res = await chain(req);
      if (res.stream) throw new ConnectError("an interceptor answered a unary call with a stream", Code.Internal);
      // send() decoded the message with this method's own output codec.
      return res as UnaryResponse<I, O>;
    },
  };
}

/** protobuf-es reflection, for methods the tables do not cover. */
function reflection(method: DescMethodUnary): { input: Coder; output: Coder } {
  const { input, output } = method;
  return {
    input: { encode: (m) => toBinary(input, m), decode: (b) => fromBinary(input, b) },
    output: { encode: (m) => toBinary(output, m), decode: (b) => fromBinary(output, b) },
  };
}

const unlimited = new WeakSet<AbortSignal>();

/**
 * Adds an abort listener that the call removes when it settles. One signal
 * (a worker's or an application's shutdown) may ride on hundreds of calls
 * at once, each with its listener, which is no leak: Node's warning at 11
 * listeners is lifted for such signals.
 */
export function listen(signal: AbortSignal, onAbort: () => void): void {
  if (!unlimited.has(signal)) {
    unlimited.add(signal);
    setMaxListeners(0, signal);
  }
  signal.addEventListener("abort", onAbort);
}

function pathOf(method: { parent: DescService; name: string }): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Node's headers as fetch Headers, pseudo-headers left out. */
export function headersOf(h: http2.IncomingHttpHeaders, into = new Headers()): Headers {
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(":") || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) into.append(k, x);
    else into.append(k, v);
  }
  return into;
}

export function single(h: http2.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

async function send(opts: LeanClientOptions, req: UnaryRequest, path: string, coder: { input: Coder; output: Coder }, timeoutMs: number | undefined): Promise<UnaryResponse> {
  if (req.signal.aborted) throw ConnectError.from(req.signal.reason, Code.Canceled);
  const body = coder.input.encode(req.message);
  if (body.length > opts.writeMaxBytes) {
    throw new ConnectError(`message size ${body.length} is larger than configured writeMaxBytes ${opts.writeMaxBytes}`, Code.ResourceExhausted);
  }
  const headers: http2.OutgoingHttpHeaders = {
    "content-type": "application/grpc+proto",
    te: "trailers",
    "user-agent": opts.userAgent,
  };
  req.header.forEach((v, k) => {
    headers[k] = v;
  });
  if (timeoutMs !== undefined) {
    if (timeoutMs <= 0) throw new ConnectError("the deadline passed before the call was sent", Code.DeadlineExceeded);
    headers["grpc-timeout"] = grpcTimeout(timeoutMs);
  }

  let stream: http2.ClientHttp2Stream;
  try {
    stream = await opts.sessions.request("POST", path, headers, {});
  } catch (err) {
    throw ConnectError.from(err, Code.Unavailable);
  }

  return new Promise<UnaryResponse>((resolve, reject) => {
    let settled = false;
    let responseHeaders: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    let timer: NodeJS.Timeout | undefined;

    const settle = (err: ConnectError | undefined, res?: UnaryResponse) => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      if (req.signal !== NEVER) req.signal.removeEventListener("abort", onAbort);
      if (err) {
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(err);
      } else resolve(res!);
    };
    const onAbort = () => settle(ConnectError.from(req.signal.reason, Code.Canceled));
    if (req.signal !== NEVER) listen(req.signal, onAbort);
    // It may have fired while the stream was being opened.
    if (req.signal.aborted) {
      onAbort();
      return;
    }
    // Beyond setTimeout's range (about 24.8 days) Node would fire at once.
    if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
      timer = setTimeout(() => settle(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), timeoutMs);
    }

    stream.on("response", (h) => {
      responseHeaders = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => {
      opts.sessions.notifyResponseByteRead(stream);
      size += chunk.length;
      if (size > opts.readMaxBytes + PREFIX_BYTES) {
        settle(new ConnectError(`message larger than configured readMaxBytes ${opts.readMaxBytes}`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    stream.on("error", (err) => settle(ConnectError.from(err, Code.Unavailable)));
    stream.on("close", () => {
      if (settled) return;
      const h = responseHeaders;
      if (h === undefined) {
        settle(new ConnectError(`the stream closed without a response (HTTP/2 code ${stream.rstCode})`, Code.Unavailable));
        return;
      }
      // Trailers-only responses carry the status in the headers.
      const t = trailers ?? h;
      const meta = headersOf(h);
      if (trailers) headersOf(trailers, meta);
      if (single(t, "grpc-status") === undefined) {
        const http = Number(h[":status"]);
        // Headers, then nothing: the connection went (a broker killed
        // mid-call) or the stream was reset. UNAVAILABLE, as gRPC's own
        // clients say it, so that callers retry or fail over.
        if (http === 200 && trailers === undefined) {
          settle(new ConnectError(`the stream ended before the call's status arrived (HTTP/2 code ${stream.rstCode})`, Code.Unavailable, meta));
          return;
        }
        settle(new ConnectError(`HTTP ${http} without a gRPC status`, http === 200 ? Code.Unknown : codeFromHttpStatus(http), meta));
        return;
      }
      const err = errorFromStatus((name) => single(t, name), meta);
      if (err !== undefined) {
        settle(err);
        return;
      }
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      if (all.length < PREFIX_BYTES || all[0]! & 1 || all.readUInt32BE(1) !== all.length - PREFIX_BYTES) {
        settle(new ConnectError("protocol error: expected exactly one uncompressed response message", Code.Internal));
        return;
      }
      let message: Message;
      try {
        // A plain Uint8Array view, so bytes fields are not Buffers.
        message = coder.output.decode(new Uint8Array(all.buffer, all.byteOffset + PREFIX_BYTES, all.length - PREFIX_BYTES));
      } catch (err) {
        settle(ConnectError.from(err, Code.Internal));
        return;
      }
      settle(undefined, {
        stream: false,
        service: req.service,
        method: req.method,
        header: headersOf(h),
        trailer: trailers ? headersOf(trailers) : new Headers(),
        message,
      });
    });
    stream.end(frame(body));
  });
}
