/**
 * An in-memory stand-in for the broker's WorkerService, for the worker's
 * unit tests: it honours credit exactly as the contract says, records every
 * call, and lets a test mark leases lost or cancel-requested. It is not a
 * broker (no store, no retries); end-to-end behaviour is tested against the
 * real one in test/client/.
 */
import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { type Job, JobSchema, JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import {
  type LeaseOpen,
  LeaseResponseSchema,
  type LeasedJob,
  LeasedJobSchema,
  type NackRequest,
  WorkerService,
} from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { JobwireClient } from "../client.js";

export interface FakeBroker {
  client: JobwireClient;
  opens: LeaseOpen[];
  credits: number[];
  acks: string[][];
  nacks: NackRequest[];
  heartbeats: string[][];
  /** Tokens whose lease is gone. */
  lost: Set<string>;
  /** Tokens whose job had CancelJob called. */
  cancelRequested: Set<string>;
  /** Streams the broker is serving now. */
  openStreams: number;
  /** Largest number of jobs delivered and not yet acked or nacked. */
  maxOutstanding: number;
  /** Queues a job for delivery; returns its lease token. */
  add(init?: Partial<Pick<Job, "type" | "queue" | "attempt" | "maxAttempts" | "contentType">> & { payload?: unknown; leaseMs?: number }): string;
  /** Ends every open stream with this error on its next turn. */
  failStreams(code: Code): void;
  /** Fails the next `n` Ack calls with UNAVAILABLE. */
  failAcks(n: number): void;
  /** Fails every Nack call with this code from now on (undefined: stop failing). */
  failNacks(code: Code | undefined): void;
  /** Holds every Ack call until the returned function is called. */
  holdAcks(): () => void;
  /** The most Ack calls that were in flight at once. */
  maxAcksInFlight: number;
  settled(token: string): boolean;
}

type Wake = () => void;

export function fakeBroker(): FakeBroker {
  const pending: LeasedJob[] = [];
  const outstanding = new Set<string>();
  const wakers = new Set<Wake>();
  let failWith: Code | undefined;
  let ackFailures = 0;
  let nackFailure: Code | undefined;
  let ackGate: Promise<void> | null = null;
  let acksInFlight = 0;
  let seq = 0;
  const wakeAll = (): void => {
    for (const w of [...wakers]) w();
  };
  const settledTokens = new Set<string>();

  const fb: Omit<FakeBroker, "client"> = {
    opens: [],
    credits: [],
    acks: [],
    nacks: [],
    heartbeats: [],
    lost: new Set(),
    cancelRequested: new Set(),
    openStreams: 0,
    maxOutstanding: 0,
    maxAcksInFlight: 0,
    add(init = {}) {
      seq++;
      const token = `tok-${seq}`;
      const payload = init.payload instanceof Uint8Array ? init.payload : new TextEncoder().encode(JSON.stringify(init.payload ?? {}));
      const job = create(JobSchema, {
        id: String(seq),
        queue: init.queue ?? "q",
        type: init.type ?? "t",
        payload,
        contentType: init.contentType ?? "application/json",
        state: JobState.RUNNING,
        attempt: init.attempt ?? 1,
        maxAttempts: init.maxAttempts ?? 25,
        ...(init.leaseMs !== undefined
          ? { leaseDuration: { seconds: BigInt(Math.floor(init.leaseMs / 1000)), nanos: (init.leaseMs % 1000) * 1e6 } }
          : {}),
      });
      const expires = Date.now() + (init.leaseMs ?? 30_000);
      pending.push(
        create(LeasedJobSchema, {
          job,
          leaseToken: token,
          leaseExpiresAt: create(TimestampSchema, { seconds: BigInt(Math.floor(expires / 1000)), nanos: (expires % 1000) * 1e6 }),
        }),
      );
      wakeAll();
      return token;
    },
    failStreams(code) {
      failWith = code;
      wakeAll();
    },
    failAcks(n) {
      ackFailures = n;
    },
    failNacks(code) {
      nackFailure = code;
    },
    holdAcks() {
      let release!: () => void;
      ackGate = new Promise<void>((r) => (release = r));
      return () => {
        ackGate = null;
        release();
      };
    },
    settled(token) {
      return settledTokens.has(token);
    },
  };

  const settle = (token: string): void => {
    outstanding.delete(token);
    settledTokens.add(token);
  };

  const transport = createRouterTransport(({ service }) => {
    service(WorkerService, {
      async *lease(requests) {
        let credit = 0;
        let max = 0;
        let ended = false;
        let wake: Wake = () => {};
        const waker: Wake = () => wake();
        wakers.add(waker);
        fb.openStreams++;
        void (async () => {
          try {
            for await (const r of requests) {
              if (r.msg.case === "open") {
                fb.opens.push(r.msg.value);
                max = r.msg.value.maxInFlight;
                credit = max;
              } else if (r.msg.case === "credit") {
                fb.credits.push(r.msg.value.count);
                credit = Math.min(max, credit + r.msg.value.count);
              }
              wake();
            }
          } catch {
            // the call ended
          }
          ended = true;
          wake();
        })();
        try {
          for (;;) {
            if (failWith !== undefined) {
              const code = failWith;
              failWith = undefined;
              throw new ConnectError("fake broker going away", code);
            }
            if (ended) return;
            if (credit > 0 && pending.length > 0) {
              const lj = pending.shift() as LeasedJob;
              credit--;
              outstanding.add(lj.leaseToken);
              fb.maxOutstanding = Math.max(fb.maxOutstanding, outstanding.size);
              yield create(LeaseResponseSchema, { jobs: [lj] });
              continue;
            }
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
        } finally {
          wakers.delete(waker);
          fb.openStreams--;
        }
      },
      async ack(req) {
        acksInFlight++;
        fb.maxAcksInFlight = Math.max(fb.maxAcksInFlight, acksInFlight);
        try {
          if (ackGate) await ackGate;
        } finally {
          acksInFlight--;
        }
        if (ackFailures > 0) {
          ackFailures--;
          throw new ConnectError("fake ack failure", Code.Unavailable);
        }
        fb.acks.push([...req.leaseTokens]);
        const lost = req.leaseTokens.filter((t) => fb.lost.has(t));
        for (const t of req.leaseTokens) if (!fb.lost.has(t)) settle(t);
        return { lostLeaseTokens: lost };
      },
      nack(req) {
        if (nackFailure !== undefined) throw new ConnectError("fake nack failure", nackFailure);
        if (fb.lost.has(req.leaseToken)) throw new ConnectError("lease lost", Code.FailedPrecondition);
        fb.nacks.push(req);
        settle(req.leaseToken);
        const state = fb.cancelRequested.has(req.leaseToken)
          ? JobState.CANCELLED
          : req.permanent
            ? JobState.DEAD
            : JobState.RETRYABLE;
        return { state };
      },
      heartbeat(req) {
        fb.heartbeats.push([...req.leaseTokens]);
        const expires = Date.now() + 30_000;
        return {
          results: req.leaseTokens.map((t) => ({
            leaseToken: t,
            lost: fb.lost.has(t),
            cancelRequested: fb.cancelRequested.has(t),
            ...(fb.lost.has(t)
              ? {}
              : { leaseExpiresAt: { seconds: BigInt(Math.floor(expires / 1000)), nanos: 0 } }),
          })),
        };
      },
    });
  });
  return Object.assign(fb, { client: new JobwireClient({ transport }) }) as FakeBroker;
}

/** Resolves when `cond()` holds; rejects after `timeoutMs`. Polls every few ms. */
export async function until(cond: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
