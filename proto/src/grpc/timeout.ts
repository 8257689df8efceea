/**
 * grpc-timeout: at most 8 digits and a unit (gRPC over HTTP/2, "Requests").
 */

const UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Milliseconds, undefined when absent, an Error when malformed. */
export function parseGrpcTimeout(value: string | undefined): number | undefined | Error {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return new Error(`invalid grpc-timeout header ${JSON.stringify(value)}`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** The header for a deadline ms away: the finest unit whose count fits in 8 digits, rounded up. */
export function grpcTimeout(ms: number): string {
  for (const [unit, per] of [["m", 1], ["S", 1000], ["M", 60_000], ["H", 3_600_000]] as const) {
    const n = Math.max(1, Math.ceil(ms / per));
    if (n <= 99_999_999) return `${n}${unit}`;
  }
  return "99999999H";
}

/** The longest delay setTimeout honours; a longer one fires after 1 ms, so it means "no deadline" here. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
