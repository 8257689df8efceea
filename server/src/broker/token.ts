import type { LeaseRef } from "../model.js";

/**
 * A lease token names the job and carries the attempt's random fencing
 * value: "<job id>.<uuid>". Clients treat it as opaque. The uuid is new for
 * every lease, so a token from an earlier attempt never matches again.
 */
const UUID_LENGTH = 36;

export function encodeToken(jobId: string, uuid: string): string {
  return `${jobId}.${uuid}`;
}

/** The largest job id, 2^63-1, as Postgres prints it. */
const MAX_ID = "9223372036854775807";

/**
 * Returns null for anything that is not a well-formed token: a job id (1 to
 * 19 digits, at most 2^63-1), a dot, and a uuid in lower-case hex. An id past
 * the bigint range failed the whole coalesced ack statement in SQL, and with
 * it every other worker's acks in that statement. Scanned by hand rather than
 * with a regular expression, whose match array and groups showed in the
 * broker's profile at one token per job.
 */
export function decodeToken(token: string): LeaseRef | null {
  const dot = token.length - UUID_LENGTH - 1;
  if (dot < 1 || dot > 19 || token.charCodeAt(dot) !== 46 /* . */) return null;
  for (let i = 0; i < dot; i++) {
    const c = token.charCodeAt(i);
    if (c < 48 || c > 57) return null;
  }
  // 19 digits may pass 2^63-1; as equal-length digit strings, they compare as numbers.
  if (dot === 19 && token.slice(0, 19) > MAX_ID) return null;
  for (let i = 0; i < UUID_LENGTH; i++) {
    const c = token.charCodeAt(dot + 1 + i);
    const ok = i === 8 || i === 13 || i === 18 || i === 23 ? c === 45 /* - */ : (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
    if (!ok) return null;
  }
  return { id: token.slice(0, dot), token: token.slice(dot + 1) };
}
