import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { JobServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/job_service_fast";
import { WorkerServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { leanUnaryHandler } from "@jobwire/proto/grpc";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { Broker } from "../broker/broker.js";
import type { Logger } from "../log.js";
import { toConnectError } from "./errors.js";
import { registerReflection } from "./reflection.js";
import { adminService, jobService, workerService } from "./services.js";

export interface ServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  interceptors?: Interceptor[];
  /** Extra plain-HTTP routes (metrics, dashboard, health); return false to fall through to 404. */
  httpRoutes?: (...args: Parameters<NonNullable<Parameters<typeof connectNodeAdapter>[0]["fallback"]>>) => boolean;
}

export interface RunningServer {
  host: string;
  port: number;
  url: string;
  /** Stops accepting connections and waits for calls in flight, up to timeoutMs. */
  close(timeoutMs: number): Promise<void>;
}

/** How long a finished response waits for the client to close its side before the stream is reset. */
const HALF_OPEN_GRACE_MS = 1000;

/** The HTTP/2 connection preface every h2c client sends first. */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One port for everything: gRPC (HTTP/2 cleartext), and gRPC-Web, Connect
 * and plain HTTP (metrics, health) over HTTP/1.1 or HTTP/2. Each new TCP
 * connection is sniffed: the HTTP/2 preface goes to the h2 server, anything
 * else to the HTTP/1.1 server.
 */
export async function startServer(broker: Broker, log: Logger, opts: ServerOptions): Promise<RunningServer> {
  // Plain unary gRPC calls skip connect-es (@jobwire/proto/grpc); each
  // service's generated codecs (proto/fast) read and write their messages.
  // AdminService has none: its calls are rare, and reflection codes them.
  const services = [
    { service: JobService, impl: jobService(broker, log), codecs: JobServiceCodecs },
    { service: WorkerService, impl: workerService(broker, log, opts.maxMessageBytes), codecs: WorkerServiceCodecs },
    { service: AdminService, impl: adminService(broker, log) },
  ];
  const routes = (router: ConnectRouter) => {
    for (const s of services) router.service(s.service, s.impl as never);
    registerReflection(router, [JobService, WorkerService, AdminService]);
  };
  const unary = leanUnaryHandler(services, {
    interceptors: opts.interceptors ?? [],
    maxMessageBytes: opts.maxMessageBytes,
    toError: (err, method) => toConnectError(err, log, method.name),
  });
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: opts.maxMessageBytes,
    writeMaxBytes: opts.maxMessageBytes,
    // Compressed requests are accepted, but responses go out uncompressed:
    // gzip cost more CPU than any other step of a lease batch in profiles,
    // and brokers sit next to their workers.
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    interceptors: opts.interceptors ?? [],
    grpc: true,
    grpcWeb: true,
    connect: true,
    fallback: (req, res) => {
      if (opts.httpRoutes?.(req, res)) return;
      res.statusCode = 404;
      res.end("not found\n");
    },
  });

  // Once a response is complete (trailers written), a client that never
  // closes its side of the stream (connect-node's, for one) would hold the
  // stream, and so the connection and our shutdown, open. As gRPC servers
  // do, reset such a stream with NO_ERROR, after a grace period that lets
  // the client read the trailers first.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000 } }, (req, res) => {
    req.stream.once("finish", () => {
      if (req.stream.closed) return;
      const t = setTimeout(() => {
        if (!req.stream.closed) req.stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }, HALF_OPEN_GRACE_MS);
      t.unref();
      req.stream.once("close", () => clearTimeout(t));
    });
    if (!unary(req, res)) handler(req, res);
  });
  const h1 = http.createServer(handler);
  h1.keepAliveTimeout = 65_000;

  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });

  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    socket.once("readable", () => {
      const head: Buffer | null = socket.read();
      if (!head) {
        socket.destroy();
        return;
      }
      socket.unshift(head);
      const isH2 = head.length >= 3 && head.subarray(0, Math.min(head.length, H2_PREFACE.length)).equals(H2_PREFACE.subarray(0, Math.min(head.length, H2_PREFACE.length)));
      (isH2 ? h2 : h1).emit("connection", socket);
    });
    socket.on("error", (err) => log.debug("socket error", { err }));
  });
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
    url: `http://${host}:${addr.port}`,
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
