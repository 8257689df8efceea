import type http2 from "node:http2";
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethodUnary, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { Logger } from "../log.js";
import { toConnectError } from "./errors.js";

/**
 * A lean server for unary gRPC calls over HTTP/2: Enqueue, Ack, Heartbeat
 * and the other request/response RPCs. connect-es spends about 0.5-1 ms of
 * CPU on each unary call (per-call AbortSignals, DOMExceptions, async
 * iterables); a unary gRPC call is one length-prefixed message each way,
 * and this handles it in a tenth of that. See docs/performance.md.
 *
 * Only the plain case is taken: POST, `application/grpc` or
 * `application/grpc+proto`, no request compression. Everything else (gRPC-Web,
 * Connect, JSON, gzip, streams, reflection) falls through to connect-es.
 * Both paths run the same service implementations and the same
 * interceptors (auth, tracing), so a caller cannot tell them apart.
 */

// biome-ignore lint/suspicious/noExplicitAny: implementations are typed by their service.
type AnyUnaryImpl = (req: any, ctx: HandlerContext) => Promise<unknown> | unknown;

interface Route {
  service: DescService;
  method: DescMethodUnary;
  impl: AnyUnaryImpl;
  decode: (bytes: Uint8Array) => unknown;
  encode: (message: never) => Uint8Array;
  /** The interceptors around the implementation, composed once. */
  chain: (r: UnaryRequest) => Promise<UnaryResponse>;
}

export interface UnaryServiceEntry {
  service: DescService;
  // biome-ignore lint/suspicious/noExplicitAny: any ServiceImpl.
  impl: Record<string, any>;
}

export interface GrpcUnaryOptions {
  interceptors: Interceptor[];
  /** Hand-written decoders for hot request types, by method; they must return what fromBinary would. */
  decoders?: Map<DescMethodUnary, (bytes: Uint8Array) => unknown>;
  /** Hand-written encoders for hot response types, by method; they must write what toBinary would. */
  encoders?: Map<DescMethodUnary, (message: never) => Uint8Array>;
  maxMessageBytes: number;
  log: Logger;
}

/** Returns a request handler that answers the unary gRPC calls it can, and false for the rest. */
export function grpcUnaryHandler(
  services: UnaryServiceEntry[],
  opts: GrpcUnaryOptions,
): (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => boolean {
  const routes = new Map<string, Route>();
  const chain = opts.interceptors.reduceRight<(r: UnaryRequest) => Promise<UnaryResponse>>(
    (next, interceptor) => interceptor(next as never) as never,
    (r) => (r as unknown as LeanRequest).call.invoke(r),
  );
  for (const { service, impl } of services) {
    for (const method of service.methods) {
      if (method.methodKind !== "unary" || typeof impl[method.localName] !== "function") continue;
      const m = method as DescMethodUnary;
      const decode = opts.decoders?.get(m) ?? ((bytes: Uint8Array) => fromBinary(m.input, bytes));
      const encode = opts.encoders?.get(m) ?? ((msg: never) => toBinary(m.output, msg));
      routes.set(`/${service.typeName}/${method.name}`, { service, method: m, impl: impl[method.localName].bind(impl), decode, encode, chain });
    }
  }
  return (req, res) => {
    const route = routes.get(req.url);
    if (route === undefined || req.method !== "POST") return false;
    const ct = req.headers["content-type"];
    if (ct !== "application/grpc" && ct !== "application/grpc+proto") return false;
    const enc = req.headers["grpc-encoding"];
    if (enc !== undefined && enc !== "identity") return false;
    new UnaryCall(route, req, res.stream, opts).start();
    return true;
  };
}

/** grpc-timeout: up to 8 digits and a unit. */
const TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

function parseGrpcTimeout(value: string | undefined): number | undefined | Error {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return new Error(`invalid grpc-timeout header ${JSON.stringify(value)}`);
  return Number(m[1]) * TIMEOUT_UNITS[m[2]!]!;
}

const GRPC_CONTENT_TYPE = "application/grpc+proto";

/** The longest delay setTimeout honours; longer ones fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
function encodeGrpcMessage(message: string): string {
  return encodeURIComponent(message);
}

class UnaryCall implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly values: ContextValues = createContextValues();
  readonly responseHeader = new Headers();
  readonly responseTrailer = new Headers();
  readonly url: string;
  private controller: AbortController | undefined;
  private header: Headers | undefined;
  private deadline: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly route: Route,
    private readonly req: http2.Http2ServerRequest,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly opts: GrpcUnaryOptions,
  ) {
    this.url = `http://${req.authority ?? "localhost"}${req.url}`;
  }

  get method(): DescMethodUnary {
    return this.route.method;
  }
  get service(): DescService {
    return this.route.service;
  }
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }
  get requestHeader(): Headers {
    if (this.header === undefined) {
      const h = new Headers();
      for (const [k, v] of Object.entries(this.req.headers)) {
        if (k.startsWith(":") || v === undefined) continue;
        if (Array.isArray(v)) for (const x of v) h.append(k, x);
        else h.append(k, v);
      }
      this.header = h;
    }
    return this.header;
  }
  timeoutMs = (): number | undefined => (this.deadline === undefined ? undefined : this.deadline - Date.now());

  start(): void {
    const timeout = parseGrpcTimeout(this.req.headers["grpc-timeout"] as string | undefined);
    if (timeout instanceof Error) {
      this.req.resume();
      this.fail(new ConnectError(timeout.message, Code.InvalidArgument));
      return;
    }
    if (timeout !== undefined) {
      this.deadline = Date.now() + timeout;
      // Beyond setTimeout's range (about 24.8 days) Node would fire at once.
      if (timeout <= MAX_TIMER_MS) {
        this.timer = setTimeout(() => this.fail(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), timeout);
      }
    }
    // A client that resets the stream cancels the call.
    this.stream.once("close", () => {
      if (!this.done) this.finish();
    });
    const limit = this.opts.maxMessageBytes + 5;
    const chunks: Buffer[] = [];
    let size = 0;
    this.req.on("data", (chunk: Buffer) => {
      if (this.done) return;
      size += chunk.length;
      if (size > limit) {
        this.fail(new ConnectError(`request message larger than ${this.opts.maxMessageBytes} bytes`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    this.req.once("end", () => {
      if (!this.done) void this.run(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
  }

  private async run(body: Buffer): Promise<void> {
    const { method } = this.route;
    let message: unknown;
    try {
      message = this.route.decode(this.frame(body));
    } catch (err) {
      this.fail(err instanceof ConnectError ? err : new ConnectError(`cannot decode ${method.input.typeName}: ${(err as Error).message}`, Code.InvalidArgument));
      return;
    }
    try {
      const res = await this.route.chain(new LeanRequest(this, message) as unknown as UnaryRequest);
      this.reply(res);
    } catch (err) {
      this.fail(toConnectError(err, this.opts.log, method.name));
    }
  }

  /** One message, uncompressed, exactly filling the body. */
  private frame(body: Buffer): Uint8Array {
    if (body.length < 5) throw new ConnectError("protocol error: the request holds no message", Code.InvalidArgument);
    if (body[0]! & 1) throw new ConnectError("protocol error: compressed message without grpc-encoding", Code.InvalidArgument);
    const len = body.readUInt32BE(1);
    if (len > this.opts.maxMessageBytes) {
      throw new ConnectError(`request message larger than ${this.opts.maxMessageBytes} bytes`, Code.ResourceExhausted);
    }
    if (body.length !== 5 + len) throw new ConnectError("protocol error: a unary request holds exactly one message", Code.InvalidArgument);
    // A plain Uint8Array view, so bytes fields are not Buffers (as with connect-es).
    return new Uint8Array(body.buffer, body.byteOffset + 5, len);
  }

  async invoke(r: UnaryRequest): Promise<UnaryResponse> {
    const out: DescMessage = this.route.method.output;
    const result = await this.route.impl(r.message, this);
    return {
      stream: false,
      service: this.route.service,
      method: this.route.method,
      header: this.responseHeader,
      trailer: this.responseTrailer,
      message: isMessage(result, out) ? result : create(out, result as never),
    } as UnaryResponse;
  }

  private reply(res: UnaryResponse): void {
    if (this.done) return;
    const body = this.route.encode(res.message as never);
    if (body.length > this.opts.maxMessageBytes) {
      this.fail(new ConnectError(`response message larger than ${this.opts.maxMessageBytes} bytes`, Code.ResourceExhausted));
      return;
    }
    this.finish();
    if (this.stream.destroyed || this.stream.headersSent) return;
    const frame = Buffer.allocUnsafe(5 + body.length);
    frame[0] = 0;
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const headers: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": GRPC_CONTENT_TYPE };
    copyHeaders(res.header, headers);
    const trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" };
    copyHeaders(res.trailer, trailers);
    // The compat response (unused here) would send its own, empty trailers.
    this.stream.removeAllListeners("wantTrailers");
    this.stream.respond(headers, { waitForTrailers: true });
    this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
    this.stream.end(frame);
  }

  /** A trailers-only response carrying the error. */
  private fail(err: ConnectError): void {
    if (this.done) return;
    this.finish(err);
    if (this.stream.destroyed || this.stream.headersSent) return;
    const headers: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": GRPC_CONTENT_TYPE };
    copyHeaders(this.responseHeader, headers);
    copyHeaders(this.responseTrailer, headers);
    copyHeaders(err.metadata, headers);
    headers["grpc-status"] = String(err.code);
    headers["grpc-message"] = encodeGrpcMessage(err.rawMessage);
    this.stream.respond(headers, { endStream: true });
    // The request body may still be arriving; it is not wanted.
    this.req.resume();
  }

  private finish(reason?: unknown): void {
    this.done = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.controller !== undefined && !this.controller.signal.aborted) {
      this.controller.abort(reason ?? new ConnectError("the call ended", Code.Canceled));
    }
  }
}

/**
 * The request the interceptors see. Its signal and header are built only
 * if an interceptor reads them (the default broker has no interceptors).
 */
class LeanRequest {
  readonly stream = false;
  readonly requestMethod = "POST";

  constructor(
    readonly call: UnaryCall,
    readonly message: unknown,
  ) {}

  get service(): DescService {
    return this.call.service;
  }
  get method(): DescMethodUnary {
    return this.call.method;
  }
  get url(): string {
    return this.call.url;
  }
  get contextValues(): ContextValues {
    return this.call.values;
  }
  get signal(): AbortSignal {
    return this.call.signal;
  }
  get header(): Headers {
    return this.call.requestHeader;
  }
}

function copyHeaders(from: Headers, to: http2.OutgoingHttpHeaders): void {
  from.forEach((v, k) => {
    to[k] = v;
  });
}
