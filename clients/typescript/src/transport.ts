import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { DescMethodUnary } from "@bufbuild/protobuf";
import { encodeAckRequest, encodeEnqueueRequest } from "./wire-encoding.js";
import { withGrpcUnary } from "./grpc-unary.js";
import { traceContextInterceptor } from "./tracing.js";

/** The broker's default port (see server/src/config.ts). */
export const DEFAULT_ADDRESS = "http://127.0.0.1:50051";
/** Largest message this client accepts: a LeaseResponse may carry many jobs. */
export const DEFAULT_READ_MAX_BYTES = 64 * 1024 * 1024;
/** Largest message this client sends; the broker's default limit is 4 MiB. */
export const DEFAULT_WRITE_MAX_BYTES = 4 * 1024 * 1024;
/**
 * HTTP/2 PING interval while streams are open. A broker that vanished
 * without closing the TCP connection (a host crash, a dropped network) is
 * noticed after at most ping interval + ping timeout, and the Lease stream
 * fails with UNAVAILABLE so the worker reconnects.
 */
export const DEFAULT_PING_INTERVAL_MS = 10_000;
export const DEFAULT_PING_TIMEOUT_MS = 5_000;

export interface TransportOptions {
  readMaxBytes?: number;
  writeMaxBytes?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Sent as `authorization: Bearer <token>` on every call (the broker's JOBWIRE_AUTH_TOKENS). */
  token?: string;
}

/**
 * Accepts "http://host:port", "host:port" or ":port". The broker serves
 * gRPC over cleartext HTTP/2 (h2c); use https:// for a TLS-terminating proxy.
 */
export function normalizeAddress(address: string): string {
  let a = address.trim();
  if (a === "") return DEFAULT_ADDRESS;
  if (a.startsWith(":")) a = `127.0.0.1${a}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(a)) a = `http://${a}`;
  return a.replace(/\/+$/, "");
}

/** A gRPC transport plus the HTTP/2 session it owns, so it can be closed. */
export interface OwnedTransport {
  transport: Transport;
  close(): void;
}

export function createTransport(address: string, opts: TransportOptions = {}): OwnedTransport {
  const baseUrl = normalizeAddress(address);
  const sessionManager = new Http2SessionManager(baseUrl, {
    pingIntervalMs: opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
    pingTimeoutMs: opts.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
  });
  const interceptors: Interceptor[] = [traceContextInterceptor];
  if (opts.token !== undefined) {
    const bearer = `Bearer ${opts.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", bearer);
      return next(req);
    });
  }
  const limits = {
    readMaxBytes: opts.readMaxBytes ?? DEFAULT_READ_MAX_BYTES,
    writeMaxBytes: opts.writeMaxBytes ?? DEFAULT_WRITE_MAX_BYTES,
  };
  // Streams go through connect-es; unary calls take the lean path (grpc-unary.ts).
  const streams = createGrpcTransport({ baseUrl, sessionManager, interceptors, ...limits });
  const encoders = new Map<DescMethodUnary, (message: never) => Uint8Array>([
    [JobService.method.enqueue, encodeEnqueueRequest],
    [WorkerService.method.ack, encodeAckRequest],
  ]);
  const transport = withGrpcUnary(streams, { baseUrl, sessionManager, interceptors, encoders, ...limits });
  return { transport, close: () => sessionManager.abort() };
}
