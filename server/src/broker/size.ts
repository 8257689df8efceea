import type { Job } from "../model.js";

/**
 * A generous upper bound on a job's encoded size, for keeping responses
 * under the message limit: lease batches are split by it, and ListJobs
 * stops a page early (saying so) rather than build a response the client
 * would refuse.
 */
export function approxJobBytes(j: Job): number {
  let n = 512 + j.payload.byteLength + j.queue.length + j.type.length;
  for (const k in j.headers) n += k.length + j.headers[k]!.length + 8;
  for (const e of j.errors) n += e.message.length + e.workerId.length + 64;
  return n;
}
