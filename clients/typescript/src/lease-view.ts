import { decodeLeasedJob } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { type LeasedJobViewPlain, decodeLeasedJobViewPlain } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import type { Job } from "@jobwire/proto/jobwire/v1/job_pb";

/**
 * How the worker reads a leased job: as a jobwire.view.v1.LeasedJobView
 * (generated, proto/fast), which holds what every job needs: times as
 * epoch milliseconds, no BigInt, none of the fields only JobInfo shows.
 * The whole Job is decoded only if a handler reads job.info; building it
 * for every job was a fifth of the worker's garbage in a burn-down.
 */

/**
 * Above this, a leased job is decoded whole at once instead of keeping its
 * encoded bytes for later, so that a large payload is not held twice (once
 * copied for the handler, once in the batch the bytes are a view of).
 */
export const LAZY_INFO_MAX_BYTES = 16 * 1024;

/**
 * The view of one encoded LeasedJob. Its payload is a copy, as plain
 * decoders make them: a plain Uint8Array with its own ArrayBuffer, so that
 * a handler's rawPayload neither pins the batch nor exposes other jobs'
 * bytes through .buffer. Malformed UTF-8 throws, as protobuf-es does.
 */
export const decodeLeaseView: (bytes: Uint8Array) => LeasedJobViewPlain = decodeLeasedJobViewPlain;

/** The whole Job of an encoded LeasedJob, sharing the payload the view already copied. */
export function decodeFullJob(bytes: Uint8Array, payload: Uint8Array): Job | undefined {
  const job = decodeLeasedJob(bytes).job;
  if (job !== undefined) job.payload = payload;
  return job;
}
