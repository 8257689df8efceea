import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { createContextValues, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import { JobServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/job_service_fast";
import { WorkerServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { leanUnaryHandler } from "@jobwire/proto/grpc";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { NO_ACCESS, type Access } from "../broker/access.js";
import type { Broker } from "../broker/broker.js";
import type { Logger } from "../log.js";
import type { Authenticator } from "./auth.js";
import { ACCESS, PEER } from "./context.js";
import { toConnectError } from "./errors.js";
import { registerReflection } from "./reflection.js";
import { correctUnreadableStatus } from "./read-errors.js";
import { refuse } from "./reject.js";
import { adminService, jobService, type StreamAckWrapper, workerService } from "./services.js";
import { readTls, type TlsFiles } from "./tls.js";

export interface ServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  interceptors?: Interceptor[];
  /** What interceptors are to unary calls, for acks sent on Lease streams. */
  wrapStreamAck?: StreamAckWrapper;
  /** Who may call what (auth.ts); checked before a request's body is read. */
  auth: Authenticator;
  /** Serve TLS (and require client certificates when clientCa is set); null: cleartext. */
  tls: TlsFiles | null;
  /** A request's headers and body (unary calls, plain HTTP) must arrive within this long. */
  requestTimeoutMs: number;
  /** Concurrent HTTP/2 streams a connection may open. */
  maxStreamsPerConnection: number;
  /** Extra plain-HTTP routes (metrics, dashboard, health); return false to fall through to 404. */
  httpRoutes?: (...args: Parameters<NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>>) => boolean;
}

export interface RunningServer {
  host: string;
  port: number;
  url: string;
  /** Re-reads the TLS files: new connections get the new certificate; open streams keep theirs. */
  reloadTls(): Promise<void>;
  /** Stops accepting connections and waits for calls in flight, up to timeoutMs. */
  close(timeoutMs: number): Promise<void>;
}

/** How long a finished response waits for the client to close its side before the stream is reset. */
const HALF_OPEN_GRACE_MS = 1000;

/** The HTTP/2 connection preface every h2c client sends first. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Streaming RPCs: their request body is open-ended, so the request timeout does not apply. */
const STREAMING = new Set([
  "/jobwire.v1.WorkerService/Lease",
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]);

type NodeReq = http.IncomingMessage | http2.Http2ServerRequest;
type NodeRes = http.ServerResponse | http2.Http2ServerResponse;

/**
 * One port for everything: gRPC over HTTP/2, and gRPC-Web, Connect and
 * plain HTTP (dashboard, metrics, health) over HTTP/1.1 or HTTP/2.
 * Cleartext: each new TCP connection is sniffed, the HTTP/2 preface going
 * to the h2 server and anything else to the HTTP/1.1 server. TLS: ALPN
 * picks (h2, else http/1.1), and with a client CA every connection must
 * present a certificate that chains to it.
 *
 * Every request passes the authenticator's check before either path (the
 * lean unary gRPC path, or connect-es) reads its body; the caller's access
 * then travels to the handlers in the call's context values.
 */
export async function startServer(broker: Broker, log: Logger, opts: ServerOptions): Promise<RunningServer> {
  // Plain unary gRPC calls skip connect-es (@jobwire/proto/grpc); each
  // service's generated codecs (proto/fast) read and write their messages.
  // AdminService has none: its calls are rare, and reflection codes them.
  const services = [
    { service: JobService, impl: jobService(broker, log), codecs: JobServiceCodecs },
    { service: WorkerService, impl: workerService(broker, log, opts.maxMessageBytes, opts.wrapStreamAck), codecs: WorkerServiceCodecs },
    { service: AdminService, impl: adminService(broker, log, opts.auth) },
  ];
  const routes = (router: ConnectRouter) => {
    for (const s of services) router.service(s.service, s.impl as never);
    registerReflection(router, [JobService, WorkerService, AdminService]);
  };
  // The RPCs connect-es serves; plain HTTP (dashboard, /metrics) is not theirs to correct.
  const rpcPaths = new Set([
    ...services.flatMap((s) => s.service.methods.map((m) => `/${s.service.typeName}/${m.name}`)),
    ...STREAMING,
  ]);
  const accessOf = new WeakMap<NodeReq, Access>();
  const contextValues = (req: NodeReq) =>
    createContextValues()
      .set(ACCESS, accessOf.get(req) ?? NO_ACCESS)
      .set(PEER, req.socket?.remoteAddress ? `${req.socket.remoteAddress}:${req.socket.remotePort}` : "");
  const unary = leanUnaryHandler(services, {
    interceptors: opts.interceptors ?? [],
    maxMessageBytes: opts.maxMessageBytes,
    toError: (err, method) => toConnectError(err, log, method.name),
    contextValues,
  });
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: opts.maxMessageBytes,
    writeMaxBytes: opts.maxMessageBytes,
    // Requests may be gzipped (inflated no further than the message limit:
    // zlib's maxOutputLength); brotli is not offered, as no client sends it.
    // Responses go out uncompressed: gzip cost more CPU than any other step
    // of a lease batch in profiles, and brokers sit next to their workers.
    acceptCompression: [compressionGzip],
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    interceptors: opts.interceptors ?? [],
    grpc: true,
    grpcWeb: true,
    connect: true,
    contextValues,
    fallback: (req, res) => {
      if (opts.httpRoutes?.(req, res)) return;
      res.statusCode = 404;
      res.end("not found\n");
    },
  });

  /** The authenticator's verdict; true when the request was refused (and answered). */
  const refused = (req: NodeReq, res: NodeRes): boolean => {
    const path = (req.url ?? "/").split("?")[0]!;
    const peer = opts.tls?.clientCa ? peerCertificate(req) : null;
    const v = opts.auth.check(path, headerOf(req, "authorization"), peer);
    if (v.ok) {
      accessOf.set(req, v.access);
      return false;
    }
    log.debug("request refused", { path, code: v.code });
    refuse(req, res, v.code, v.message);
    return true;
  };

  const h2 = http2.createServer({ settings: { maxConcurrentStreams: opts.maxStreamsPerConnection } }, (req, res) => {
    // Once a response is complete (trailers written), a client that never
    // closes its side of the stream (connect-node's, for one) would hold
    // the stream, and so the connection and our shutdown, open. As gRPC
    // servers do, reset such a stream with NO_ERROR, after a grace period
    // that lets the client read the trailers first.
    req.stream.once("finish", () => {
      if (req.stream.closed) return;
      const t = setTimeout(() => {
        if (!req.stream.closed) req.stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }, HALF_OPEN_GRACE_MS);
      t.unref();
      req.stream.once("close", () => clearTimeout(t));
    });
    // A request whose body never finishes (5,000 half-sent ones once held
    // 129 MB for as long as their senders liked) is reset after the timeout.
    if (!STREAMING.has(req.url)) bodyTimeout(req, opts.requestTimeoutMs);
    if (refused(req, res)) return;
    if (unary(req, res)) return;
    if (rpcPaths.has(req.url)) correctUnreadableStatus(res);
    handler(req, res);
  });
  const h1 = http.createServer((req, res) => {
    if (refused(req, res)) return;
    if (rpcPaths.has(req.url ?? "")) correctUnreadableStatus(res);
    handler(req, res);
  });
  h1.keepAliveTimeout = 65_000;
  // Node's own limits for HTTP/1.1: headers, and the whole request.
  h1.headersTimeout = opts.requestTimeoutMs;
  h1.requestTimeout = opts.requestTimeoutMs;

  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    socket.on("error", (err) => log.debug("socket error", { err: err.message }));
  };

  let front: net.Server;
  let secure: tls.Server | null = null;
  if (opts.tls) {
    const files = opts.tls;
    secure = tls.createServer(
      { ...(await readTls(files)), ALPNProtocols: ["h2", "http/1.1"], requestCert: Boolean(files.clientCa), rejectUnauthorized: Boolean(files.clientCa) },
      (socket) => {
        track(socket);
        (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
      },
    );
    secure.on("tlsClientError", (err) => log.debug("TLS handshake failed", { err: err.message }));
    front = secure;
  } else {
    front = net.createServer((socket) => {
      track(socket);
      socket.once("readable", () => {
        const head: Buffer | null = socket.read();
        if (!head) {
          socket.destroy();
          return;
        }
        socket.unshift(head);
        const n = Math.min(head.length, H2_PREFACE.length);
        const isH2 = head.length >= 3 && head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        (isH2 ? h2 : h1).emit("connection", socket);
      });
    });
  }
  front.maxConnections = 10_000;

  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen(opts.port, opts.host, () => resolve());
  });
  const addr = front.address() as net.AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;

  return {
    host: addr.address,
    port: addr.port,
    url: `${opts.tls ? "https" : "http"}://${host}:${addr.port}`,
    async reloadTls() {
      if (!secure || !opts.tls) return;
      secure.setSecureContext(await readTls(opts.tls));
      log.info("TLS certificate reloaded");
    },
    async close(timeoutMs: number) {
      // No new connections; existing HTTP/2 sessions get GOAWAY and finish their streams.
      const closed = new Promise<void>((resolve) => front.close(() => resolve()));
      for (const s of sessions) s.close();
      h1.closeIdleConnections();
      const timer = setTimeout(() => {
        log.warn("shutdown timeout: closing remaining connections", { connections: sockets.size });
        for (const s of sockets) s.destroy();
      }, timeoutMs);
      timer.unref();
      // front.close resolves once every connection it accepted has closed.
      await closed;
      clearTimeout(timer);
    },
  };
}

function headerOf(req: NodeReq, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The client certificate of a TLS connection, or null. */
function peerCertificate(req: NodeReq): tls.PeerCertificate | null {
  const socket = req.socket as unknown as Partial<tls.TLSSocket>;
  const cert = typeof socket.getPeerCertificate === "function" ? socket.getPeerCertificate() : null;
  return cert && Object.keys(cert).length > 0 ? cert : null;
}

/** Resets an HTTP/2 stream whose request body has not ended within `ms`. */
function bodyTimeout(req: http2.Http2ServerRequest, ms: number): void {
  const t = setTimeout(() => {
    if (!req.stream.closed) req.stream.close(http2.constants.NGHTTP2_CANCEL);
  }, ms);
  t.unref();
  const clear = () => clearTimeout(t);
  req.once("end", clear);
  req.stream.once("close", clear);
}
