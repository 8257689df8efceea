/**
 * What the bench process and its worker and producer processes say to each
 * other over the fork() IPC channel (advanced serialisation, so typed
 * arrays travel as they are). The spec goes in the BENCH_SPEC environment
 * variable as JSON.
 *
 *   child  -> ready                      (connected, idle)
 *   parent -> go                         (start taking or sending jobs)
 *   child  -> progress (every 25 ms)     (cumulative count)
 *   parent -> stop                       (workers; producers also stop by themselves)
 *   child  -> result, then exits
 *   child  -> failed, then exits non-zero
 */
import type { SystemName } from "./options.js";

/** Job payload: `i` is the job's index within its scenario, unique across producers. */
export interface Payload {
  i: number;
}

export interface WorkerSpec {
  role: "worker";
  system: SystemName;
  /** Broker address (jobwire) or database URL (peers). */
  endpoint: string;
  queue: string;
  concurrency: number;
  /** Record each handler's start time (latency scenario). */
  recordStarts: boolean;
}

export type ProducerMode =
  /** `concurrency` single-job calls in flight until `seconds` pass. */
  | "closed-loop"
  /** single-job calls at `rate` per second for `seconds`, not waiting for earlier calls. */
  | "paced"
  /** `total` jobs in batches of `batch`, `concurrency` calls in flight. */
  | "bulk";

export interface ProducerSpec {
  role: "producer";
  system: SystemName;
  endpoint: string;
  queue: string;
  mode: ProducerMode;
  /** First job index this producer hands out; it counts up from there. */
  firstIndex: number;
  concurrency: number;
  seconds: number;
  rate: number;
  total: number;
  batch: number;
}

export type ChildSpec = WorkerSpec | ProducerSpec;

export interface WorkerResult {
  /** Index of each job whose handler ran, in start order (repeats included). */
  handled: Uint32Array;
  /** performance.timeOrigin + performance.now() at each handler's start, parallel to `handled`; empty unless recordStarts. */
  starts: Float64Array;
  /** Jobs whose completion the system confirmed to this worker (jobwire: Ack answered; peers: handler returned). */
  acked: number;
  /** Failures: a job that ended other than completed, a runtime error. Any one breaks the scenario. */
  errors: string[];
  /** Warnings the runtime logged; recorded and shown, but not failures (a job that still ended completed once). */
  warnings: string[];
}

export interface ProducerResult {
  /** Jobs enqueued: indices firstIndex .. firstIndex + sent - 1. */
  sent: number;
  /** Duration of each call in ms (single-job modes) or each batch call (bulk). */
  callMs: Float64Array;
  /** For paced mode: when each job's call was made and when it returned (epoch ms, high resolution), by index - firstIndex. */
  sentAt: Float64Array;
  returnedAt: Float64Array;
  /** From go to the last call's return, in ms. */
  elapsedMs: number;
  errors: string[];
}

export type ParentMessage = { type: "go" } | { type: "stop" };

export type ChildMessage =
  | { type: "ready" }
  | { type: "progress"; count: number }
  | { type: "result"; result: WorkerResult | ProducerResult }
  | { type: "failed"; message: string };

/** Wall-clock time with sub-millisecond resolution, comparable across processes on one machine. */
export function now(): number {
  return performance.timeOrigin + performance.now();
}
