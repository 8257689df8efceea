import type http2 from "node:http2";
import type { LookupFunction } from "node:net";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { JobServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/job_service_fast";
import { WorkerServiceCodecs, encodeLeaseRequest } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { decodeRawLeaseResponse } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import { type StreamCall, leanStream, withLeanUnary } from "@jobwire/proto/grpc";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { type LeaseAckResult, type LeaseRequest, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
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

/**
 * TLS for https:// brokers (a broker started with JOBWIRE_TLS_CERT and
 * JOBWIRE_TLS_KEY). Each PEM is the text itself, as a string or a Buffer
 * (read a file with fs.readFileSync). The names match the Python client's
 * jobwire.TLS(ca, cert, key, server_name).
 */
export interface TlsOptions {
  /** CA certificate(s) to trust instead of Node's built-in roots, for a private CA. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate chain, presented to a broker that requires one (JOBWIRE_TLS_CLIENT_CA, mTLS). Give key with it. */
  cert?: string | Buffer;
  /** The client certificate's private key. */
  key?: string | Buffer;
  /** The name the broker's certificate must carry, when the address's host is not in it (also sent as SNI). */
  serverName?: string;
}

export interface TransportOptions {
  readMaxBytes?: number;
  writeMaxBytes?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Sent as `authorization: Bearer <token>` on every call (the broker's JOBWIRE_AUTH_TOKENS). */
  token?: string;
  /** TLS settings for https:// addresses. Giving them makes an address without a scheme https://. */
  tls?: TlsOptions;
  /**
   * Resolves broker host names (default: dns.lookup). Every address a name
   * resolves to is tried in turn when a connection is made, so one name
   * with a DNS record per broker replica fails over to a live one.
   */
  lookup?: LookupFunction;
}

/**
 * Accepts "http://host:port", "https://host:port", "host:port" or ":port".
 * An address without a scheme is http:// (the broker's cleartext HTTP/2),
 * or https:// when `tls` is true.
 */
export function normalizeAddress(address: string, tls = false): string {
  let a = address.trim();
  if (a === "") return tls ? DEFAULT_ADDRESS.replace(/^http:/, "https:") : DEFAULT_ADDRESS;
  if (a.startsWith(":")) a = `127.0.0.1${a}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(a)) a = `${tls ? "https" : "http"}://${a}`;
  a = a.replace(/\/+$/, "");
  let url: URL;
  try {
    url = new URL(a);
  } catch {
    throw new TypeError(`broker address "${address}" must look like http://host:port or https://host:port`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") {
    throw new TypeError(`broker address "${address}" must look like http://host:port or https://host:port`);
  }
  if (tls && url.protocol === "http:") {
    throw new TypeError(`broker address "${address}" is http://, but TLS options were given: use https://`);
  }
  return a;
}

/** WorkerService.Lease with each batch's LeasedJobs left encoded, for the Worker to read as views. */
/** A Lease stream's call options, and where answers to acks sent on it go (LeaseAck). */
export interface LeaseCall extends StreamCall {
  onAcks?: (acks: LeaseAckResult[]) => void;
}

/** The Lease stream, each response's jobs left encoded (lease-view.ts); ack answers go to call.onAcks. */
export type LeaseBatches = (requests: AsyncIterable<LeaseRequest>, call: LeaseCall) => AsyncIterable<Uint8Array[]>;

/** A gRPC transport plus the HTTP/2 session it owns, so it can be closed. */
export interface OwnedTransport {
  transport: Transport;
  leaseBatches: LeaseBatches;
  close(): void;
}

const LEASE_PATH = `/${WorkerService.typeName}/${WorkerService.method.lease.name}`;

export function createTransport(address: string, opts: TransportOptions = {}): OwnedTransport {
  const baseUrl = normalizeAddress(address, opts.tls !== undefined);
  const sessionManager = new Http2SessionManager(
    baseUrl,
    {
      pingIntervalMs: opts.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
      pingTimeoutMs: opts.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS,
    },
    connectOptions(opts),
  );
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
    const onAcks = call.onAcks;
    const decode = (b: Uint8Array): Uint8Array[] => {
      const r = decodeRawLeaseResponse(b);
      if (r.acks.length > 0) onAcks?.(r.acks);
      return r.jobs;
    };
    return leanStream(stream, LEASE_PATH, requests, encodeLeaseRequest, decode, { ...call, header });
  };
  return { transport, leaseBatches, close: () => sessionManager.abort() };
}

/**
 * What http2.connect gets beyond the URL: the TLS material, and a lookup
 * that hands every address of the broker's name to net.connect, which then
 * tries them one after another (autoSelectFamily, Node's "happy eyeballs":
 * a refused address costs nothing, an unreachable one 250 ms), so a name
 * with a record per replica still connects while one replica is down.
 */
function connectOptions(opts: TransportOptions): http2.SecureClientSessionOptions {
  // http2.connect hands its options to net.connect / tls.connect, whose
  // autoSelectFamily its own type does not list.
  const out: http2.SecureClientSessionOptions & { autoSelectFamily?: boolean } = { autoSelectFamily: true };
  if (opts.lookup !== undefined) out.lookup = opts.lookup;
  const tls = opts.tls;
  if (tls !== undefined) {
    if ((tls.cert === undefined) !== (tls.key === undefined)) throw new TypeError("tls: give cert and key together (or neither)");
    if (tls.ca !== undefined) out.ca = tls.ca;
    if (tls.cert !== undefined) out.cert = tls.cert;
    if (tls.key !== undefined) out.key = tls.key;
    if (tls.serverName !== undefined) out.servername = tls.serverName;
  }
  return out;
}
