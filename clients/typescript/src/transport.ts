import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { JobServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/job_service_fast";
import { WorkerServiceCodecs, encodeLeaseRequest } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { decodeRawLeaseResponse } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import { type StreamCall, leanStream, withLeanUnary } from "@jobwire/proto/grpc";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { type LeaseRequest, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { injectTraceHeaders } from "./tracing.js";

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

const USER_AGENT = "jobwire-typescript";

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

/** WorkerService.Lease with each batch's LeasedJobs left encoded, for the Worker to read as views. */
export type LeaseBatches = (requests: AsyncIterable<LeaseRequest>, call: StreamCall) => AsyncIterable<Uint8Array[]>;

/** A gRPC transport plus the HTTP/2 session it owns, so it can be closed. */
export interface OwnedTransport {
  transport: Transport;
  leaseBatches: LeaseBatches;
  close(): void;
}

const LEASE_PATH = `/${WorkerService.typeName}/${WorkerService.method.lease.name}`;

export function createTransport(address: string, opts: TransportOptions = {}): OwnedTransport {
  const baseUrl = normalizeAddress(address);
  const sessionManager = new Http2SessionManager(baseUrl, {
    pingIntervalMs: opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
    pingTimeoutMs: opts.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
  });
  // What every call carries: trace context, and the token when there is one.
  const bearer = opts.token === undefined ? undefined : `Bearer ${opts.token}`;
  const setHeaders = (h: Headers): void => {
    injectTraceHeaders(h);
    if (bearer !== undefined) h.set("authorization", bearer);
  };
  const interceptors: Interceptor[] = [
    (next) => (req) => {
      setHeaders(req.header);
      return next(req);
    },
  ];
  const limits = {
    readMaxBytes: opts.readMaxBytes ?? DEFAULT_READ_MAX_BYTES,
    writeMaxBytes: opts.writeMaxBytes ?? DEFAULT_WRITE_MAX_BYTES,
  };
  // Unary calls take the lean path, with the generated codecs; streams a
  // caller opens through the generated clients go through connect-es.
  const streams = createGrpcTransport({ baseUrl, sessionManager, interceptors, ...limits });
  const transport = withLeanUnary(streams, {
    baseUrl,
    sessions: sessionManager,
    interceptors,
    userAgent: USER_AGENT,
    services: [
      { service: JobService, codecs: JobServiceCodecs },
      { service: WorkerService, codecs: WorkerServiceCodecs },
    ],
    ...limits,
  });
  // The Worker's Lease stream goes on the lean path too, read as raw batches.
  const stream = { sessions: sessionManager, userAgent: USER_AGENT, ...limits };
  const leaseBatches: LeaseBatches = (requests, call) => {
    const header = new Headers(call.header);
    setHeaders(header);
    return leanStream(stream, LEASE_PATH, requests, encodeLeaseRequest, (b) => decodeRawLeaseResponse(b).jobs, { ...call, header });
  };
  return { transport, leaseBatches, close: () => sessionManager.abort() };
}
