import { WireType } from "@bufbuild/protobuf/wire";
import { Writer } from "@jobwire/proto/wire";
import type { JobErrorPlain, JobPlain } from "@jobwire/proto/fast/jobwire/v1/job_fast";
import { encodeLeaseResponsePlain, type LeasedJobPlain } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import type { LeaseResponse } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { Job, Lease } from "../model.js";
import { stateToPb } from "./convert.js";

/**
 * A batch of leases as one LeaseResponse, encoded by the generated plain
 * codec (proto/fast, from the .proto) straight from the broker's domain
 * objects: no protobuf-es message per job, no reflection. Reflection's
 * toBinary of lease batches was once a quarter of the broker's CPU (~46 µs
 * per job); see docs/performance.md.
 *
 * The whole batch goes to connect-es as one unknown field of an empty
 * LeaseResponse: toBinary writes an unknown field as its tag followed by its
 * data verbatim, so the data is the encoded batch without its first tag,
 * and the worker receives the bytes encodeLeaseResponsePlain wrote. One
 * buffer per batch, rather than an entry per job, saved an allocation and
 * a copy per job in this encoder and again in protobuf-es.
 */

/** LeaseResponse.jobs is field 1, length-delimited: every job starts with the one byte 0x0a. */
const JOBS_TAG = 0x0a;

export function leaseResponse(leases: Lease[]): LeaseResponse {
  const res: LeaseResponse = { $typeName: "jobwire.v1.LeaseResponse", jobs: [], acks: [] };
  if (leases.length === 0) return res;
  let size = 0;
  const jobs: LeasedJobPlain[] = [];
  for (const l of leases) {
    size += 320 + l.job.payload.byteLength;
    jobs.push({ job: plainJob(l.job), leaseToken: l.token, leaseExpiresAtMs: l.expiresAt.getTime() });
  }
  const bytes = encodeLeaseResponsePlain({ jobs, acks: [] }, new Writer(size));
  if (bytes[0] !== JOBS_TAG) throw new Error("a lease batch must start with LeaseResponse.jobs");
  res.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: bytes.subarray(1) }];
  return res;
}

const NO_ERRORS: JobErrorPlain[] = [];

/**
 * A domain Job as the generated plain type: the same fields as jobToPb
 * (convert.ts) sets, with times as milliseconds. A field added to
 * jobwire.v1.Job is a field added to JobPlain, and this stops compiling
 * until it is set here too.
 */
function plainJob(j: Job): JobPlain {
  return {
    id: j.id,
    queue: j.queue,
    type: j.type,
    payload: j.payload,
    contentType: j.contentType,
    state: stateToPb(j.state),
    priority: j.priority,
    attempt: j.attempt,
    maxAttempts: j.maxAttempts,
    runAtMs: j.runAt.getTime(),
    createdAtMs: j.createdAt.getTime(),
    finishedAtMs: j.finishedAt?.getTime(),
    headers: j.headers,
    idempotencyKey: j.idempotencyKey ?? "",
    errors: j.errors.length === 0 ? NO_ERRORS : j.errors.map((e) => ({ attempt: e.attempt, message: e.message, atMs: e.at.getTime(), workerId: e.workerId })),
    leaseExpiresAtMs: j.leaseExpiresAt?.getTime(),
    cancelRequested: j.cancelRequested,
    leaseDurationMs: j.leaseMs ?? undefined,
    workerId: j.workerId ?? "",
    concurrencyKey: j.concurrencyKey ?? "",
    orderingKey: j.orderingKey ?? "",
    errorsDropped: j.errorsDropped,
  };
}
