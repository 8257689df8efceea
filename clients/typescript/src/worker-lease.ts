/**
 * The Lease stream. `open` carries max_in_flight = concurrency; after that
 * the worker sends `credit` only as handler slots free, so the broker never
 * sends more jobs than the worker can start. When the stream breaks, or the
 * broker ends it (a draining broker does), the worker reconnects with
 * jittered backoff; the client moves to its next broker first, when it was
 * given several (failover.ts), so a worker never waits for a dead broker.
 * Leases outlive the stream: jobs in flight keep running and are acked
 * through whichever broker is current.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type LeaseAckResult, type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { backoffDelay, sleep } from "./backoff.js";
import { msToDuration } from "./convert.js";
import { JobCancelledError, type JobwireError, toJobwireError } from "./errors.js";
import { LAZY_INFO_MAX_BYTES, decodeFullJob, decodeLeaseView } from "./lease-view.js";
import { PushQueue } from "./push-queue.js";
import { errorMessage, tracingInert } from "./tracing.js";
import { MIN_HEARTBEAT_INTERVAL_MS } from "./worker-heartbeat.js";
import { type Held, type WorkerCore, abortHeld } from "./worker-state.js";

/** After a stop, how long the broker gets to end the half-closed Lease stream. */
export const STREAM_CLOSE_TIMEOUT_MS = 5_000;
/** Codes that mean the worker is misconfigured; reconnecting (to any broker) cannot help. */
const FATAL_STREAM_CODES = new Set<Code>([Code.InvalidArgument, Code.Unimplemented, Code.Unauthenticated, Code.PermissionDenied]);

interface Stream {
  gen: number;
  requests: PushQueue<LeaseRequest>;
  /** The credit the broker holds for this stream: max_in_flight, less the jobs it sent, plus the credit returned. */
  brokerCredit: number;
  /** Credit owed to the broker and not sent yet (see returnCredit). */
  owed: number;
  creditQueued: boolean;
  /** The broker takes acks on this stream (its response header jobwire-lease-acks: 1). */
  acksOnStream: boolean;
  /** Acks sent on this stream and not yet answered, by ack_id. */
  acks: Map<bigint, { resolve: (lost: string[]) => void; reject: (err: ConnectError) => void }>;
}

/** The broker's response header that says a worker may ack on the Lease stream. */
const LEASE_ACKS_HEADER = "jobwire-lease-acks";

export class LeaseLoop {
  private stream: Stream | undefined;
  private gen = 0;
  private nextAckId = 1n;

  constructor(private readonly core: WorkerCore) {}

  /**
   * Keeps a Lease stream open until the worker stops. Returns the error
   * with which the broker refused the stream for good (a bad queue name, a
   * token without the work scope), or undefined after a stop.
   */
  async run(): Promise<JobwireError | undefined> {
    const { s } = this.core;
    let failures = 0;
    while (!this.core.stopping) {
      let connected = false;
      let error: JobwireError | undefined;
      try {
        await this.runStream(() => {
          connected = true;
          failures = 0;
          s.onEvent({ type: "connected" });
        });
      } catch (err) {
        error = toJobwireError(err);
      }
      if (connected) s.onEvent(error === undefined ? { type: "disconnected" } : { type: "disconnected", error });
      if (this.core.stopping) break;
      if (error !== undefined && FATAL_STREAM_CODES.has(error.code)) {
        s.log.error(`the broker refused the Lease stream: ${error.message}`);
        return error;
      }
      failures++;
      const delay = backoffDelay(failures, s.backoff);
      s.log.warn(
        `Lease stream ${error === undefined ? "ended" : `failed (${error.message})`}; reconnecting to ${this.core.client.address} in ${delay}ms`,
      );
      await sleep(delay, this.core.stopController.signal);
    }
    return undefined;
  }

  /**
   * Acks on the open Lease stream, when the broker takes acks there:
   * resolves with the tokens whose lease was lost. Null when there is no
   * such stream; the caller then uses the Ack call. An ack on a stream
   * replaces a call per flush (an HTTP/2 stream, headers, a unary
   * round trip) with one message on a stream already open.
   */
  ackOnStream(tokens: string[]): Promise<string[]> | null {
    const st = this.stream;
    if (st === undefined || !st.acksOnStream || st.requests.isClosed) return null;
    const ackId = this.nextAckId++;
    return new Promise<string[]>((resolve, reject) => {
      st.acks.set(ackId, { resolve, reject });
      st.requests.push(create(LeaseRequestSchema, { msg: { case: "ack", value: { ackId, leaseTokens: tokens } } }));
    });
  }

  /** Half-closes the open stream: the broker sends nothing more and ends it. */
  halfClose(): void {
    this.stream?.requests.close();
  }

  private async runStream(onConnected: () => void): Promise<void> {
    const { s, stopController } = this.core;
    const gen = ++this.gen;
    const requests = new PushQueue<LeaseRequest>();
    const abort = new AbortController();
    const stream: Stream = { gen, requests, brokerCredit: s.concurrency, owed: 0, creditQueued: false, acksOnStream: false, acks: new Map() };
    this.stream = stream;
    requests.push(
      create(LeaseRequestSchema, {
        msg: {
          case: "open",
          value: {
            queues: s.queues,
            workerId: s.workerId,
            maxInFlight: s.concurrency,
            ...(s.leaseDurationMs !== undefined ? { leaseDuration: msToDuration(s.leaseDurationMs) } : {}),
          },
        },
      }),
    );
    // A stop() that lands while the stream is open half-closes it; if the
    // broker does not end it soon after, cut it.
    let closeTimer: NodeJS.Timeout | undefined;
    const onStop = (): void => {
      closeTimer = setTimeout(() => abort.abort(new Error("the broker did not end the Lease stream after half-close")), STREAM_CLOSE_TIMEOUT_MS);
    };
    stopController.signal.addEventListener("abort", onStop, { once: true });
    try {
      const batches = this.core.client.leaseBatches(requests, {
        signal: abort.signal,
        timeoutMs: 0, // the stream lives as long as the worker
        onHeader: (h) => {
          stream.acksOnStream = h.get(LEASE_ACKS_HEADER) === "1";
          onConnected();
        },
        onAcks: (results) => answerAcks(stream, results),
      });
      for await (const batch of batches) {
        const inert = tracingInert();
        stream.brokerCredit -= batch.length;
        for (const bytes of batch) this.accept(bytes, gen, inert);
        this.flushCredit(stream);
      }
    } catch (err) {
      // After a stop, a stream we cut ourselves is not an error.
      if (this.core.stopping && abort.signal.aborted) return;
      throw err;
    } finally {
      stopController.signal.removeEventListener("abort", onStop);
      clearTimeout(closeTimer);
      requests.close();
      if (this.stream?.gen === gen) this.stream = undefined;
      // Unanswered acks may or may not have been applied: the settler sends
      // them again (a second ack of a completed job changes nothing).
      const gone = new ConnectError("the Lease stream ended before the ack was answered", Code.Unavailable);
      for (const a of stream.acks.values()) a.reject(gone);
      stream.acks.clear();
    }
  }

  /**
   * Owes one credit to the stream that delivered a job. Jobs from an older
   * stream return nothing: their credit died with it.
   */
  returnCredit(gen: number): void {
    const st = this.stream;
    if (st === undefined || st.gen !== gen) return;
    st.owed++;
    this.flushCredit(st);
  }

  /**
   * Sends what is owed once the broker's credit for the stream falls below
   * half of max_in_flight, coalescing a tick's credits into one message.
   * Above that the broker can send work to every slot it knows is free, and
   * more credit would not change what it does; a message per finished job
   * cost both ends CPU per job at low rates (one HTTP/2 frame, encoded,
   * sent, read and decoded). At full load the broker's credit stays low,
   * so credit goes back as soon as slots free up, as before.
   */
  private flushCredit(st: Stream): void {
    if (st.owed === 0 || st.creditQueued || st.brokerCredit * 2 >= this.core.s.concurrency) return;
    // Finished jobs whose acks are not yet answered count too: credit for
    // new jobs waits while they are as many as the slots (acks fell behind:
    // a slow or unreachable broker). Without this bound a worker whose
    // handlers outran its acks held ~90,000 jobs, all of whose leases kept
    // running, and heartbeats for all of them.
    if (this.core.held.size >= 2 * this.core.s.concurrency) return;
    st.creditQueued = true;
    queueMicrotask(() => {
      st.creditQueued = false;
      const n = st.owed;
      if (n === 0 || this.stream !== st || st.requests.isClosed) return;
      st.owed = 0;
      st.brokerCredit += n;
      st.requests.push(create(LeaseRequestSchema, { msg: { case: "credit", value: { count: n } } }));
    });
  }

  /** An owed ack was answered: credit held back while acks lagged may go now. */
  settled(): void {
    const st = this.stream;
    if (st !== undefined && st.owed > 0) this.flushCredit(st);
  }

  /**
   * Takes a leased job. Normally a slot is free, because credit only comes
   * from free slots. Right after a reconnect the new stream is opened with
   * full credit while jobs from the old one may still run; jobs that arrive
   * then wait (heartbeated) until a slot frees, so no more than
   * `concurrency` handlers ever run at once. The overshoot is bounded by the
   * jobs that were running when the old stream broke.
   */
  private accept(bytes: Uint8Array, gen: number, inert: boolean): void {
    const { s, held } = this.core;
    let view: ReturnType<typeof decodeLeaseView>;
    try {
      view = decodeLeaseView(bytes);
    } catch (err) {
      s.log.error(`the broker sent a leased job that cannot be read (${errorMessage(err)}); ignoring it`);
      return;
    }
    const job = view.job;
    const token = view.leaseToken;
    if (job === undefined || token === "") {
      s.log.error("the broker sent a leased job without a job or token; ignoring it");
      return;
    }
    if (held.has(token)) return;
    const now = Date.now();
    const expiresAtMs = view.leaseExpiresAtMs;
    const leaseMs = Math.max(
      MIN_HEARTBEAT_INTERVAL_MS * 3,
      job.leaseDurationMs ?? s.leaseDurationMs ?? (expiresAtMs !== undefined ? expiresAtMs - now : 30_000),
    );
    const large = bytes.length > LAZY_INFO_MAX_BYTES;
    const h: Held = {
      token,
      job,
      encoded: large ? undefined : bytes,
      full: large ? decodeFullJob(bytes, job.payload) : undefined,
      infoCache: undefined,
      streamGen: gen,
      leaseMs,
      expiresAtMs,
      nextBeatAt: now + this.core.beats.interval(leaseMs),
      controller: undefined,
      abortReason: undefined,
      lost: false,
      cancelRequested: job.cancelRequested,
      started: false,
      settling: false,
      settledAt: 0,
      handlerEnded: false,
      reportEnded: false,
      inert,
    };
    held.set(h.token, h);
    this.core.beats.noteDue(h.nextBeatAt);
    if (h.cancelRequested) abortHeld(h, new JobCancelledError(`job ${job.id} was cancelled`));
    this.core.exec.admit(h);
  }
}

/** Settles the stream acks that the broker answered. */
function answerAcks(st: Stream, results: LeaseAckResult[]): void {
  for (const r of results) {
    const a = st.acks.get(r.ackId);
    if (a === undefined) continue;
    st.acks.delete(r.ackId);
    if (r.errorCode === 0) a.resolve(r.lostLeaseTokens);
    else a.reject(new ConnectError(r.errorMessage, r.errorCode as Code));
  }
}
