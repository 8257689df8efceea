import { create } from "@bufbuild/protobuf";
import { type Duration, DurationSchema, type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";

/** Milliseconds to a protobuf Duration. */
export function msToDuration(ms: number): Duration {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`duration must be a finite number of ms >= 0, got ${ms}`);
  const whole = Math.floor(ms);
  return create(DurationSchema, {
    seconds: BigInt(Math.floor(whole / 1000)),
    nanos: (whole % 1000) * 1_000_000 + Math.round((ms - whole) * 1_000_000),
  });
}

export function durationToMs(d: Duration | undefined): number | undefined {
  if (d === undefined) return undefined;
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1_000_000);
}

export function dateToTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw new RangeError("invalid Date");
  return create(TimestampSchema, {
    seconds: BigInt(Math.floor(ms / 1000)),
    nanos: (((ms % 1000) + 1000) % 1000) * 1_000_000,
  });
}

/** Epoch milliseconds, whole (the nanos below a millisecond dropped, as a Date does). */
export function timestampToMs(ts: Timestamp | undefined): number | undefined {
  if (ts === undefined) return undefined;
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000);
}

export function timestampToDate(ts: Timestamp | undefined): Date | undefined {
  const ms = timestampToMs(ts);
  return ms === undefined ? undefined : new Date(ms);
}

/** A job's state as a string, the way the docs and the admin tools spell it. */
export type JobStateName =
  /** Waiting for a run_at in the future. */
  | "SCHEDULED"
  /** Due, and waiting for a worker with credit. */
  | "AVAILABLE"
  /** Leased to a worker. */
  | "RUNNING"
  /** Failed an attempt and waiting out its backoff. */
  | "RETRYABLE"
  /** Acked. Final. */
  | "COMPLETED"
  /** Failed permanently or ran out of attempts; replayable. */
  | "DEAD"
  /** Cancelled before it completed; replayable when asked. */
  | "CANCELLED"
  /** The broker sent a state this client does not know. */
  | "UNSPECIFIED";

const STATE_NAMES: Record<number, JobStateName> = {
  [JobState.SCHEDULED]: "SCHEDULED",
  [JobState.AVAILABLE]: "AVAILABLE",
  [JobState.RUNNING]: "RUNNING",
  [JobState.RETRYABLE]: "RETRYABLE",
  [JobState.COMPLETED]: "COMPLETED",
  [JobState.DEAD]: "DEAD",
  [JobState.CANCELLED]: "CANCELLED",
};

export function stateName(s: JobState): JobStateName {
  return STATE_NAMES[s] ?? "UNSPECIFIED";
}

export function stateFromName(name: JobStateName): JobState {
  for (const [k, v] of Object.entries(STATE_NAMES)) if (v === name) return Number(k) as JobState;
  return JobState.UNSPECIFIED;
}
