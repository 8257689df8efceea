/**
 * The leased jobs the worker-budget feeds, encoded once before anything is
 * measured: every job as the broker sends it (jobwire.v1.LeasedJob, by the
 * codec generated from the .proto; no broker code is involved), each behind
 * its LeaseResponse.jobs tag, all in one buffer. Jobs a .. b-1 are then the
 * bytes from offsets[a] to offsets[b]: a valid LeaseResponse, handed out
 * without a copy.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { writeLeasedJob } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { JobSchema, JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { LeasedJobSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { Writer } from "@jobwire/proto/wire";

export const BUDGET_QUEUE = "budget";
export const BUDGET_TYPE = "noop";
/** Job ids start here, so they have the digits of a table that has seen a million jobs. */
const FIRST_ID = 1_000_000;
/** LeaseResponse.jobs: field 1, length-delimited. */
const JOBS_TAG = (1 << 3) | 2;

export interface EncodedJobs {
  buf: Uint8Array;
  /** offsets[k]: where job k's tag starts; offsets[count] = buf.length. */
  offsets: Uint32Array;
  count: number;
}

/** The job index a lease token of these jobs names ("<id>.<uuid>", as the broker makes them). */
export function indexOfToken(token: string): number {
  return Number(token.slice(0, token.indexOf("."))) - FIRST_ID;
}

export function encodeJobs(count: number, workerId: string): EncodedJobs {
  const now = Date.now();
  const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });
  const enc = new TextEncoder();
  // One message made through protobuf-es (create() fills every default),
  // its per-job fields set in place for each job, all written into one
  // Writer: a create() (or a spread copy) and a Writer per job made setting
  // up 220,000 jobs take 5 s.
  const job = create(JobSchema, {
    // The fields the broker fills for a fresh no-op job (server/src/transport/lease-batch.ts).
    queue: BUDGET_QUEUE,
    type: BUDGET_TYPE,
    contentType: "application/json",
    state: JobState.RUNNING,
    attempt: 1,
    maxAttempts: 25,
    runAt: ts(now),
    createdAt: ts(now),
    leaseExpiresAt: ts(now + 30_000),
    workerId,
  });
  const leased = create(LeasedJobSchema, { job, leaseExpiresAt: ts(now + 30_000) });
  const w = new Writer(count * 200);
  const offsets = new Uint32Array(count + 1);
  for (let k = 0; k < count; k++) {
    const id = String(FIRST_ID + k);
    offsets[k] = w.pos;
    w.tag(JOBS_TAG);
    const at = w.fork();
    job.id = id;
    job.payload = enc.encode(`{"i":${k}}`);
    leased.leaseToken = `${id}.${randomUUID()}`;
    writeLeasedJob(w, leased);
    w.join(at);
  }
  offsets[count] = w.pos;
  return { buf: w.buf.subarray(0, w.pos), offsets, count };
}
