/**
 * Failover between broker replicas.
 *
 * Broker replicas share one database and hold no state of their own: a job
 * leased through one can be heartbeated, acked or nacked through any other.
 * So a client given several brokers keeps one "current" broker for all its
 * traffic and moves to the next one as soon as the current one fails to
 * serve a call (UNAVAILABLE, a refused connection, a connection that broke
 * mid-call), or ends a Lease stream. It stays on the new broker until that
 * one fails in turn; it never waits for a dead broker to come back while
 * another is up. This is the Go client's design (clients/go/failover.go).
 *
 * A broker named by a host name with several DNS records fails over one
 * level lower, when a connection is made: see connectOptions in
 * transport.ts.
 */
import { Code, type Transport } from "@connectrpc/connect";
import type { StreamCall } from "@jobwire/proto/grpc";
import type { LeaseRequest } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { asUnavailable } from "./errors.js";
import type { Logger } from "./logger.js";
import { type LeaseBatches, type OwnedTransport, normalizeAddress } from "./transport.js";

/** One broker, with the transport that reaches it. */
export interface Endpoint {
  readonly index: number;
  readonly url: string;
  readonly owned: OwnedTransport;
}

/**
 * Splits the addresses a client was given: an array, or one string with
 * several separated by commas. Each is normalized (normalizeAddress).
 */
export function parseAddresses(address: string | readonly string[] | undefined, tls: boolean): string[] {
  const raw = address === undefined ? [""] : typeof address === "string" ? address.split(",") : [...address];
  const out = raw.map((a) => a.trim()).filter((a) => a !== "");
  if (out.length === 0) return [normalizeAddress("", tls)];
  return out.map((a) => normalizeAddress(a, tls));
}

export class Brokers {
  readonly endpoints: readonly Endpoint[];
  /** Index of the endpoint calls go to now; see markFailed. */
  private preferred = 0;
  private readonly log: Logger;

  constructor(urls: string[], open: (url: string) => OwnedTransport, log: Logger) {
    this.endpoints = urls.map((url, index) => ({ index, url, owned: open(url) }));
    this.log = log;
  }

  current(): Endpoint {
    return this.endpoints[this.preferred]!;
  }

  /**
   * Records that `ep` could not serve a call. If it is still the current
   * broker, the next one in the list becomes current, so the next call,
   * retry or Lease stream goes there. Concurrent failures on one broker
   * (every call in flight when it died) move the client by one broker only.
   */
  markFailed(ep: Endpoint, err: unknown): void {
    const n = this.endpoints.length;
    if (n === 1 || this.preferred !== ep.index) return;
    this.preferred = (ep.index + 1) % n;
    const why = err instanceof Error ? err.message : String(err);
    this.log.warn(`broker ${ep.url} failed (${why}); moving to ${this.current().url}`);
  }

  close(): void {
    for (const ep of this.endpoints) ep.owned.close();
  }

  /**
   * A Transport over every broker, for the generated clients: each unary
   * call goes to the current broker, and one that fails with UNAVAILABLE
   * (or a broken connection, see asUnavailable) moves on at once to the
   * next broker not yet tried in this call, within the call's deadline.
   * With one broker that is one try. Waiting and trying another round is
   * the caller's retry policy (withRetry for JobwireClient's methods, the
   * Settler's backoff for acks). Streams go to the current broker as they
   * are; a stream's owner reconnects.
   */
  transport(): Transport {
    return {
      unary: async (method, signal, timeoutMs, header, input, contextValues) => {
        const deadline = timeoutMs !== undefined && timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
        for (let tried = 1; ; tried++) {
          const ep = this.current();
          const left = deadline === undefined ? timeoutMs : Math.max(1, deadline - Date.now());
          try {
            return await ep.owned.transport.unary(method, signal, left, header, input, contextValues);
          } catch (err) {
            const e = asUnavailable(err, signal);
            if (e.code !== Code.Unavailable || signal?.aborted) throw e;
            this.markFailed(ep, e);
            if (tried >= this.endpoints.length || (deadline !== undefined && deadline <= Date.now())) throw e;
          }
        }
      },
      stream: (method, signal, timeoutMs, header, input, contextValues) =>
        this.current().owned.transport.stream(method, signal, timeoutMs, header, input, contextValues),
    };
  }

  /**
   * The Worker's Lease stream, on the current broker. When the stream
   * fails, or the broker ends it while the worker still wants jobs (a
   * draining broker ends its streams before it stops), the broker is marked
   * failed, so the worker's reconnect goes to the next one.
   */
  leaseBatches(): LeaseBatches {
    return (requests, call) => this.watchLease(this.current(), requests, call);
  }

  private async *watchLease(ep: Endpoint, requests: AsyncIterable<LeaseRequest>, call: StreamCall): AsyncGenerator<Uint8Array[]> {
    let halfClosed = false;
    async function* tracked(): AsyncGenerator<LeaseRequest> {
      for await (const r of requests) yield r;
      halfClosed = true;
    }
    try {
      yield* ep.owned.leaseBatches(tracked(), call);
    } catch (err) {
      if (call.signal?.aborted) throw err;
      const e = asUnavailable(err, call.signal);
      if (!FATAL_CODES.has(e.code)) this.markFailed(ep, e);
      throw e;
    }
    if (!halfClosed) this.markFailed(ep, new Error("the broker ended the Lease stream"));
  }
}

/** Codes that say the request is wrong, not the broker: another broker would answer the same. */
const FATAL_CODES = new Set<Code>([Code.InvalidArgument, Code.Unimplemented, Code.Unauthenticated, Code.PermissionDenied]);
