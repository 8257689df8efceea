import type { LeaseRef } from "../store/jobs.js";

/**
 * A lease token names the job and carries the attempt's random fencing
 * value: "<job id>.<uuid>". Clients treat it as opaque. The uuid is new for
 * every lease, so a token from an earlier attempt never matches again.
 */
const TOKEN = /^(\d{1,19})\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

export function encodeToken(jobId: string, uuid: string): string {
  return `${jobId}.${uuid}`;
}

/** Returns null for anything that is not a well-formed token. */
export function decodeToken(token: string): LeaseRef | null {
  const m = TOKEN.exec(token);
  return m ? { id: m[1]!, token: m[2]! } : null;
}
