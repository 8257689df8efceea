/**
 * What the fuzzer checks once the cases are sent: half-sent requests held
 * open together, jobs left stuck, and whether the broker's memory came back.
 */
import http from "node:http";
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { JobwireClient, Worker } from "@jobwire/client";
import { type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type pg from "pg";
import type { Broker } from "../common/broker.js";
import { collectGarbage, memoryUsage } from "../common/inspector.js";
import { pollUntil, sleep } from "../common/util.js";
import { envelope } from "./wire.js";

export interface HalfOpenResult {
  opened: number;
  /** How many the broker ended by itself (answered, reset or closed) within the hold. */
  endedByBroker: number;
  holdMs: number;
  rssBeforeKiB: number | null;
  rssHeldKiB: number | null;
}

/**
 * Opens `n` requests that send their headers and part of an envelope and
 * then nothing (issue 14, finding 9: a broker should time them out), waits
 * `holdMs`, counts how many the broker ended, then abandons the rest.
 */
export async function halfOpen(origin: string, broker: Broker, n: number, holdMs: number): Promise<HalfOpenResult> {
  const rssBeforeKiB = broker.rssKiB();
  let ended = 0;
  const sessions = Array.from({ length: Math.max(1, Math.ceil(n / 200)) }, () => {
    const s = http2.connect(origin);
    s.on("error", () => {});
    return s;
  });
  const h2Streams: http2.ClientHttp2Stream[] = [];
  const h1Reqs: http.ClientRequest[] = [];
  const partial = envelope(new Uint8Array(100)).subarray(0, 20);
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      try {
        const st = sessions[i % sessions.length]!.request(
          { ":method": "POST", ":path": "/jobwire.v1.JobService/Enqueue", "content-type": "application/grpc", te: "trailers" },
          { endStream: false },
        );
        st.on("error", () => {});
        st.once("close", () => ended++);
        st.write(partial);
        h2Streams.push(st);
      } catch {
        // the session refused more streams: that counts as the broker ending it
        ended++;
      }
    } else {
      const url = new URL(origin);
      const req = http.request({
        host: url.hostname,
        port: url.port,
        method: "POST",
        path: "/jobwire.v1.JobService/Enqueue",
        agent: false,
        headers: { "content-type": "application/proto", "connect-protocol-version": "1", "content-length": "100" },
      });
      req.on("error", () => {});
      req.once("close", () => ended++);
      req.write(partial);
      h1Reqs.push(req);
    }
  }
  await sleep(holdMs);
  const rssHeldKiB = broker.rssKiB();
  const endedByBroker = ended;
  for (const st of h2Streams) if (!st.closed) st.close(http2.constants.NGHTTP2_CANCEL);
  for (const r of h1Reqs) r.destroy();
  for (const s of sessions) s.destroy();
  return { opened: n, endedByBroker, holdMs, rssBeforeKiB, rssHeldKiB };
}

export interface StuckResult {
  expiredRunning: { id: string; queue: string; attempt: number; expiredS: number; retry: unknown }[];
  undelivered: { id: string; queue: string; attempt: number; waitingS: number }[];
  drainedQueues: number;
  longLeases: number;
  /** How long the reaper took to reclaim a probe lease after the run, or null: never (within 10 s). */
  reaperMs: number | null;
  countsByState: Record<string, number>;
}

/** How long a lease may stay expired before we say the reaper missed it (its interval is 1 s by default). */
const REAPER_GRACE_S = 5;
const DRAIN_LEASE_MS = 2_000;
const PROBE_QUEUE = "fz-reaper-probe";
const PROBE_TIMEOUT_MS = 10_000;

async function failTwice(job: { attempt: number }): Promise<void> {
  if (job.attempt < 3) throw new Error(`fuzz drain: attempt ${job.attempt} fails on purpose`);
}

/**
 * Leases one fresh job with a 1 s lease, never acks it, and waits for the
 * reaper to take it back; returns the milliseconds that took, or null.
 */
async function reaperProbe(pool: pg.Pool, client: JobwireClient): Promise<number | null> {
  const { id } = await client.enqueue("fz", { probe: true }, { queue: PROBE_QUEUE, leaseDurationMs: 1_000 });
  const abort = new AbortController();
  let leasedAt = 0;
  async function* requests(): AsyncGenerator<LeaseRequest> {
    yield create(LeaseRequestSchema, { msg: { case: "open", value: { queues: [PROBE_QUEUE], workerId: "fuzz-probe", maxInFlight: 1 } } });
    await new Promise((r) => abort.signal.addEventListener("abort", r, { once: true }));
  }
  const stream = (async () => {
    for await (const res of client.workers.lease(requests(), { signal: abort.signal, timeoutMs: PROBE_TIMEOUT_MS * 2 })) {
      if (res.jobs.some((j) => j.job?.id === id)) leasedAt = Date.now();
    }
  })().catch(() => {});
  try {
    if (!(await pollUntil(() => leasedAt > 0, PROBE_TIMEOUT_MS, 50))) return null;
    const reclaimed = await pollUntil(async () => {
      const { rows } = await pool.query<{ state: string }>("SELECT state::text FROM jobwire.jobs WHERE id = $1", [id]);
      return rows[0]?.state !== "running";
    }, PROBE_TIMEOUT_MS, 100);
    return reclaimed ? Date.now() - leasedAt : null;
  } finally {
    abort.abort();
    await Promise.race([stream, sleep(2_000)]);
  }
}

/**
 * Resumes every queue (if the broker has PauseQueue), lets TypeScript
 * workers drain every queue with due work until `drainMs`, then reads what
 * is stuck: RUNNING jobs whose lease expired long enough ago that the
 * reaper should have taken them back, and due AVAILABLE jobs the workers
 * never got. The drain handler fails each job's first two attempts, so
 * every job's retry policy (the fuzzer's extreme ones included) goes
 * through the backoff computation on nack, twice, before it completes.
 * Jobs whose type the drain workers lack fail permanently (DEAD): a final
 * state, not stuck. Last, a probe job whose lease is left to expire shows
 * whether the reaper still reclaims leases at all.
 */
export async function checkStuck(pool: pg.Pool, address: string, drainMs: number): Promise<StuckResult> {
  const { rows: qs } = await pool.query<{ queue: string }>(
    `SELECT DISTINCT queue FROM jobwire.jobs
     WHERE state IN ('available', 'running') OR (state IN ('retryable', 'scheduled') AND run_at < now() + interval '5 seconds')
     LIMIT 500`,
  );
  const queues = qs.map((q) => q.queue);
  const client = new JobwireClient({ address, timeoutMs: 2000 });
  for (const q of queues) await client.admin.resumeQueue({ queue: q }, { timeoutMs: 2000 }).catch(() => {});
  const drainStart = Date.now();
  const workers = chunk(queues, 50).map(
    (part, i) =>
      new Worker({
        address,
        queues: part,
        concurrency: 50,
        workerId: `fuzz-drain-${i}`,
        handleSignals: false,
        shutdownTimeoutMs: 2_000,
        logger: { debug() {}, info() {}, warn() {}, error() {} },
        leaseDurationMs: DRAIN_LEASE_MS,
        handlers: { fz: failTwice, "fz.other": failTwice, send_email: failTwice },
      }),
  );
  const runs = workers.map((w) => w.run().catch(() => {}));
  // Drained: nothing due, nothing about to be due, nothing held by the drain workers.
  await pollUntil(async () => {
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM jobwire.jobs
       WHERE queue = ANY($1) AND (
         (state = 'available' AND run_at <= now()) OR
         (state IN ('retryable', 'scheduled') AND run_at < now() + interval '5 seconds') OR
         (state = 'running' AND worker_id LIKE 'fuzz-drain-%'))`,
      [queues],
    );
    return rows[0]!.n === 0;
  }, drainMs, 250);
  await Promise.all(workers.map((w) => w.stop().catch(() => {})));
  await Promise.race([Promise.all(runs), sleep(5_000)]);
  const reaperMs = await reaperProbe(pool, client).catch(() => null);
  client.close();

  const { rows: expired } = await pool.query<{ id: string; queue: string; attempt: number; expired_s: number; retry: unknown }>(
    `SELECT id::text, queue, attempt, extract(epoch FROM now() - lease_expires_at)::float8 AS expired_s, retry
     FROM jobwire.jobs WHERE state = 'running' AND lease_expires_at < now() - make_interval(secs => $1)
     ORDER BY id LIMIT 1000`,
    [REAPER_GRACE_S],
  );
  const { rows: waiting } = await pool.query<{ id: string; queue: string; attempt: number; waiting_s: number }>(
    `SELECT id::text, queue, attempt, extract(epoch FROM now() - run_at)::float8 AS waiting_s
     FROM jobwire.jobs WHERE state = 'available' AND run_at < $1 AND queue = ANY($2)
     ORDER BY id LIMIT 1000`,
    [new Date(drainStart - 1000), queues],
  );
  const { rows: long } = await pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM jobwire.jobs WHERE state = 'running' AND lease_expires_at > now() + interval '1 hour'",
  );
  const { rows: states } = await pool.query<{ state: string; n: number }>("SELECT state::text, count(*)::int AS n FROM jobwire.jobs GROUP BY 1 ORDER BY 1");
  return {
    expiredRunning: expired.map((r) => ({ id: r.id, queue: r.queue, attempt: r.attempt, expiredS: r.expired_s, retry: r.retry })),
    undelivered: waiting.map((r) => ({ id: r.id, queue: r.queue, attempt: r.attempt, waitingS: r.waiting_s })),
    drainedQueues: queues.length,
    reaperMs,
    longLeases: long[0]!.n,
    countsByState: Object.fromEntries(states.map((s) => [s.state, s.n])),
  };
}

function chunk<T>(items: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += n) out.push(items.slice(i, i + n));
  return out;
}

/** A full GC in the broker, when it runs with --inspect; otherwise nothing (RSS is read as it is). */
export async function gc(broker: Broker): Promise<void> {
  if (broker.inspectorUrl) await collectGarbage(broker.inspectorUrl).catch(() => {});
}

/** process.memoryUsage() of the broker, when it runs with --inspect. */
export async function brokerMemory(broker: Broker): Promise<Record<string, number> | null> {
  return broker.inspectorUrl ? memoryUsage(broker.inspectorUrl).catch(() => null) : null;
}

export interface RssResult {
  /** The broker's process.memoryUsage() at the baseline and at the end (bytes), when known. */
  memBase: Record<string, number> | null;
  memEnd: Record<string, number> | null;
  startKiB: number;
  baselineKiB: number;
  peakKiB: number;
  endKiB: number | null;
  settledMs: number;
  ok: boolean;
}

/** Target: back within this share above the warmed-up baseline. */
export const RSS_TOLERANCE = 0.2;

/** Waits (up to `settleMs`) for the broker's RSS to come back within 20% of `baselineKiB`. */
export async function settleRss(
  broker: Broker,
  startKiB: number,
  baselineKiB: number,
  peakKiB: number,
  settleMs: number,
  log: (m: string) => void,
  memBase: Record<string, number> | null,
): Promise<RssResult> {
  const t0 = Date.now();
  const limit = baselineKiB * (1 + RSS_TOLERANCE);
  let end = broker.rssKiB();
  let lastLog = t0;
  const ok = await pollUntil(async () => {
    await gc(broker);
    end = broker.rssKiB();
    if (Date.now() - lastLog >= 5_000) {
      lastLog = Date.now();
      log(`RSS ${end === null ? "?" : (end / 1024).toFixed(1)} MB after ${((Date.now() - t0) / 1000).toFixed(0)} s of quiet (target ${(limit / 1024).toFixed(1)} MB)`);
    }
    return end !== null && end <= limit;
  }, settleMs, 1_000);
  return { memBase, memEnd: await brokerMemory(broker), startKiB, baselineKiB, peakKiB, endKiB: end, settledMs: Date.now() - t0, ok };
}
