import type http2 from "node:http2";
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethod, type DescMethodUnary, type DescService, type Message } from "@bufbuild/protobuf";
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
import type { MethodCodecs, ServiceCodecs } from "../wire/codec.js";
import { PREFIX_BYTES, frame, unaryMessage } from "./envelope.js";
import { errorTrailers, type HeaderRecord } from "./status.js";
import { MAX_TIMER_MS, parseGrpcTimeout } from "./timeout.js";

/**
 * A lean server for unary gRPC calls over HTTP/2 (Enqueue, Ack, Heartbeat
 * and the other request/response RPCs). connect-es spends about 0.5-1 ms of
 * CPU on each unary call (per-call AbortSignals, DOMExceptions, async
 * iterables); a unary gRPC call is one length-prefixed message each way,
 * and this handles it in a tenth of that. See docs/performance.md.
 *
 * Only the plain case is taken: POST, `application/grpc` or
 * `application/grpc+proto`, no request compression. Everything else
 * (gRPC-Web, Connect, JSON, gzip, streams, reflection) falls through to
 * connect-es. Both run the same service implementations and interceptors,
 * so a caller cannot tell them apart (test/api/grpc-unary.test.ts checks).
 */

// biome-ignore lint/suspicious/noExplicitAny: implementations are typed by their service.
type AnyImpl = Record<string, any>;

/** One service as the lean path serves it: the codecs table is generated (proto/fast), and optional. */
export interface LeanService {
  service: DescService;
  impl: AnyImpl;
  /** Codecs by method local name; a method without one is coded by protobuf-es reflection. */
  codecs?: ServiceCodecs<DescService>;
}

export interface LeanServerOptions {
  interceptors: Interceptor[];
  maxMessageBytes: number;
  /** Turns what an implementation threw into the status the caller gets (and logs what it must). */
  toError: (err: unknown, method: DescMethodUnary) => ConnectError;
  /** The context values a call starts with, from its request (as connect-node's adapter option of that name). */
  contextValues?: (req: http2.Http2ServerRequest) => ContextValues;
}

type Next = Parameters<Interceptor>[0];

interface Route {
  service: DescService;
  method: DescMethodUnary;
  impl: (req: Message, ctx: HandlerContext) => unknown;
  decode: (bytes: Uint8Array) => Message;
  encode: (message: Message) => Uint8Array;
}

/** Returns a request handler that answers the unary gRPC calls it can, and false for the rest. */
export function leanUnaryHandler(
  services: LeanService[],
  opts: LeanServerOptions,
): (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => boolean {
  const routes = new Map<string, Route>();
  for (const { service, impl, codecs } of services) {
    for (const method of service.methods) {
      if (!isUnary(method) || typeof impl[method.localName] !== "function") continue;
      routes.set(`/${service.typeName}/${method.name}`, {
        service,
        method,
        impl: impl[method.localName].bind(impl),
        ...codecsOf(method, codecs?.[method.localName]),
      });
    }
  }
  // Composed once: the call travels on the request (LeanRequest.call).
  const chain = opts.interceptors.reduceRight<Next>(
    (next, interceptor) => interceptor(next),
    (r) => (r instanceof LeanRequest ? r.call.invoke(r) : Promise.reject(new ConnectError("not a lean call", Code.Internal))),
  );
  return (req, res) => {
    const route = routes.get(req.url);
    if (route === undefined || req.method !== "POST") return false;
    const ct = req.headers["content-type"];
    if (ct !== "application/grpc" && ct !== "application/grpc+proto") return false;
    const enc = req.headers["grpc-encoding"];
    if (enc !== undefined && enc !== "identity") return false;
    new UnaryCall(route, chain, req, res.stream, opts).start();
    return true;
  };
}

function isUnary(m: DescMethod): m is DescMethodUnary {
  return m.methodKind === "unary";
}

/** The generated codecs when the table has them, protobuf-es reflection when not. */
function codecsOf(method: DescMethodUnary, codecs: MethodCodecs<Message, Message> | undefined): Pick<Route, "decode" | "encode"> {
  if (codecs === undefined) {
    return { decode: (b) => fromBinary(method.input, b), encode: (m) => toBinary(method.output, m) };
  }
  if (codecs.input.typeName !== method.input.typeName || codecs.output.typeName !== method.output.typeName) {
    throw new Error(`the codecs given for ${method.parent.typeName}.${method.name} are for other messages`);
  }
  const { input, output } = codecs;
  return { decode: (b) => input.decode(b), encode: (m) => output.encode(m) };
}

const GRPC_CONTENT_TYPE = "application/grpc+proto";

class UnaryCall implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly values: ContextValues;
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
    private readonly chain: Next,
    private readonly req: http2.Http2ServerRequest,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly opts: LeanServerOptions,
  ) {
    this.url = `http://${req.authority ?? "localhost"}${req.url}`;
    this.values = opts.contextValues?.(req) ?? createContextValues();
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
    const limit = this.opts.maxMessageBytes + PREFIX_BYTES;
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
    let message: Message;
    try {
      message = this.route.decode(unaryMessage(body, this.opts.maxMessageBytes));
    } catch (err) {
      this.fail(err instanceof ConnectError ? err : new ConnectError(`cannot decode ${method.input.typeName}: ${(err as Error).message}`, Code.InvalidArgument));
      return;
    }
    try {
      const res = await this.chain(new LeanRequest(this, message));
      if (res.stream) throw new ConnectError("an interceptor answered a unary call with a stream", Code.Internal);
      this.reply(res.message);
    } catch (err) {
      this.fail(this.opts.toError(err, method));
    }
  }

  async invoke(r: LeanRequest): Promise<UnaryResponse> {
    const out: DescMessage = this.route.method.output;
    const result = await this.route.impl(r.message, this);
    return {
      stream: false,
      service: this.route.service,
      method: this.route.method,
      header: this.responseHeader,
      trailer: this.responseTrailer,
      message: isMessage(result, out) ? result : create(out, result as never),
    };
  }

  private reply(message: Message): void {
    if (this.done) return;
    const body = this.route.encode(message);
    if (body.length > this.opts.maxMessageBytes) {
      this.fail(new ConnectError(`response message larger than ${this.opts.maxMessageBytes} bytes`, Code.ResourceExhausted));
      return;
    }
    this.finish();
    if (this.stream.destroyed || this.stream.headersSent) return;
    const headers: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": GRPC_CONTENT_TYPE };
    copyHeaders(this.responseHeader, headers);
    const trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" };
    copyHeaders(this.responseTrailer, trailers);
    // The compat response (unused here) would send its own, empty trailers.
    this.stream.removeAllListeners("wantTrailers");
    this.stream.respond(headers, { waitForTrailers: true });
    this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
    this.stream.end(frame(body));
  }

  /** A trailers-only response carrying the error. */
  private fail(err: ConnectError): void {
    if (this.done) return;
    this.finish(err);
    if (this.stream.destroyed || this.stream.headersSent) return;
    const headers: HeaderRecord = { ":status": 200, "content-type": GRPC_CONTENT_TYPE };
    copyHeaders(this.responseHeader, headers);
    copyHeaders(this.responseTrailer, headers);
    errorTrailers(err, headers);
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
 * The request the interceptors see. Its signal and header are made only
 * if an interceptor reads them (the default broker has no interceptors).
 */
class LeanRequest implements UnaryRequest {
  readonly stream = false;
  readonly requestMethod = "POST";

  constructor(
    readonly call: UnaryCall,
    readonly message: Message,
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

function copyHeaders(from: Headers, to: HeaderRecord): void {
  from.forEach((v, k) => {
    to[k] = v;
  });
}
