import http2 from "node:http2";
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethodUnary, type MessageInitShape } from "@bufbuild/protobuf";
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
import type { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * Unary gRPC calls straight on the HTTP/2 session, skipping connect-es's
 * per-call machinery, which costs a producer about 0.5-1 ms of CPU per
 * Enqueue. A unary gRPC call is one length-prefixed message each way plus
 * a status in the trailers. Streams (Lease) stay on the connect transport.
 * Interceptors run as they would there.
 */
export interface UnaryTransportOptions {
  baseUrl: string;
  sessionManager: Http2SessionManager;
  interceptors: Interceptor[];
  readMaxBytes: number;
  writeMaxBytes: number;
  /** Hand-written encoders for hot request types, by method; they must write what toBinary would. */
  encoders?: Map<DescMethodUnary, (message: never) => Uint8Array>;
}

const USER_AGENT = "jobwire-typescript";
const NEVER = new AbortController().signal;

/** The caller's timeout, carried on the request through the interceptors to send(). */
const TIMEOUT = Symbol("jobwire.timeoutMs");
type TimedRequest = UnaryRequest & { [TIMEOUT]?: number };

export function withGrpcUnary(streams: Transport, opts: UnaryTransportOptions): Transport {
  const base = opts.baseUrl.replace(/\/+$/, "");
  // Composed once: the path and the timeout travel on the request.
  const chain = opts.interceptors.reduceRight<(r: UnaryRequest) => Promise<UnaryResponse>>(
    (n, interceptor) => interceptor(n as never) as never,
    (r) => send(opts, r, (r as TimedRequest)[TIMEOUT]),
  );
  return {
    stream: (...args) => streams.stream(...args),
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const message = isMessage(input, method.input) ? input : create(method.input, input as never);
      const req: TimedRequest = {
        stream: false,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `${base}${pathOf(method)}`,
        signal: signal ?? NEVER,
        header: new Headers(header),
        contextValues: contextValues ?? createContextValues(),
        message,
        [TIMEOUT]: timeoutMs,
      } as TimedRequest;
      return chain(req) as Promise<UnaryResponse<I, O>>;
    },
  };
}

function pathOf(method: DescMethodUnary): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** HTTP statuses that carry no grpc-status, mapped as gRPC's spec says. */
function codeFromHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

function headersOf(h: http2.IncomingHttpHeaders, into = new Headers()): Headers {
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(":") || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) into.append(k, x);
    else into.append(k, v);
  }
  return into;
}

/** grpc-timeout allows at most 8 digits: the finest unit that fits (rounded up). */
export function grpcTimeout(ms: number): string {
  for (const [unit, per] of [["m", 1], ["S", 1000], ["M", 60_000], ["H", 3_600_000]] as const) {
    const n = Math.max(1, Math.ceil(ms / per));
    if (n <= 99_999_999) return `${n}${unit}`;
  }
  return "99999999H";
}

function decodeGrpcMessage(m: string | null): string {
  if (!m) return "";
  try {
    return decodeURIComponent(m);
  } catch {
    return m;
  }
}

async function send(opts: UnaryTransportOptions, req: UnaryRequest, timeoutMs: number | undefined): Promise<UnaryResponse> {
  const { method } = req;
  if (req.signal.aborted) throw ConnectError.from(req.signal.reason, Code.Canceled);
  const encode = opts.encoders?.get(method as DescMethodUnary);
  const body = encode ? encode(req.message as never) : toBinary(method.input, req.message);
  if (body.length > opts.writeMaxBytes) {
    throw new ConnectError(`message size ${body.length} is larger than configured writeMaxBytes ${opts.writeMaxBytes}`, Code.ResourceExhausted);
  }
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);

  const headers: http2.OutgoingHttpHeaders = {
    "content-type": "application/grpc+proto",
    te: "trailers",
    "user-agent": USER_AGENT,
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
    stream = await opts.sessionManager.request("POST", pathOf(method), headers, {});
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
    if (req.signal !== NEVER) req.signal.addEventListener("abort", onAbort);
    // It may have fired while the stream was being opened.
    if (req.signal.aborted) {
      onAbort();
      return;
    }
    // Beyond setTimeout's range (about 24.8 days) Node would fire at once.
    if (timeoutMs !== undefined && timeoutMs <= 2 ** 31 - 1) {
      timer = setTimeout(() => settle(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), timeoutMs);
    }

    stream.on("response", (h) => {
      responseHeaders = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => {
      opts.sessionManager.notifyResponseByteRead(stream);
      size += chunk.length;
      if (size > opts.readMaxBytes + 5) {
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
      const status = t["grpc-status"];
      const meta = headersOf(h);
      if (trailers) headersOf(trailers, meta);
      if (status === undefined) {
        const http = Number(h[":status"]);
        settle(new ConnectError(`HTTP ${http} without a gRPC status`, http === 200 ? Code.Unknown : codeFromHttpStatus(http), meta));
        return;
      }
      const code = Number(status);
      if (code !== 0) {
        const c = code in Code && code > 0 ? (code as Code) : Code.Unknown;
        settle(new ConnectError(decodeGrpcMessage(meta.get("grpc-message")), c, meta));
        return;
      }
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      if (all.length < 5 || all[0]! & 1 || all.readUInt32BE(1) !== all.length - 5) {
        settle(new ConnectError("protocol error: expected exactly one uncompressed response message", Code.Internal));
        return;
      }
      let message: unknown;
      try {
        // A plain Uint8Array view, so bytes fields are not Buffers.
        message = fromBinary(method.output, new Uint8Array(all.buffer, all.byteOffset + 5, all.length - 5));
      } catch (err) {
        settle(ConnectError.from(err, Code.Internal));
        return;
      }
      settle(undefined, {
        stream: false,
        service: req.service,
        method,
        header: headersOf(h),
        trailer: trailers ? headersOf(trailers) : new Headers(),
        message,
      } as UnaryResponse);
    });
    stream.end(frame);
  });
}
