/**
 * Value pools: ordinary values that pass validation, and the extremes each
 * type and each field invites (issue 14: ids over 2^64, durations over 2^31
 * ms, timestamps before 4713 BC, huge multipliers, NULs, huge strings).
 */
import type { Rng } from "../common/rng.js";

/** Seconds from the Unix epoch to 4714-11-24 BC (Julian day 0), where Postgres's timestamps begin. */
const JULIAN_ZERO_S = -210866803200n;
const NOW_S = 1_780_000_000n; // a fixed "now" (2026), so cases repeat across days

export const QUEUES = ["fz-a", "fz-b", "fz-c", "default"];
export const TYPES = ["fz", "fz.other", "send_email"];

export const INT32 = [0, 1, -1, 2, 25, 1000, 1001, 2 ** 31 - 1, -(2 ** 31), 65536, 100_000];
export const INT64 = [0n, 1n, -1n, 2n ** 31n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)];
export const UINT64 = [0n, 1n, 2n ** 63n, 2n ** 64n - 1n];
export const DOUBLES = [0, 1, -1, 0.5, 2, 100, 1e6, 1e308, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity, -0, 2 ** 53];

/** [seconds, nanos] */
export const DURATIONS: [bigint, number][] = [
  [0n, 0],
  [1n, 0],
  [2n, 500_000_000],
  [-1n, 0],
  [0n, -1],
  [0n, 1],
  [2_147_484n, 0], // just over 2^31 ms
  [2_592_000n, 0], // 30 days
  [34_560_000n, 0], // 400 days
  [315_576_000_000n, 0], // the largest Duration
  [315_576_000_001n, 0], // past it
  [2n ** 63n - 1n, 999_999_999],
  [-(2n ** 63n), 0],
  [0n, 999_999_999],
  [0n, 1_000_000_000], // nanos out of range
  [1n, -1], // signs disagree
];

export const TIMESTAMPS: [bigint, number][] = [
  [0n, 0],
  [NOW_S, 0],
  [NOW_S + 3600n, 0],
  [NOW_S - 86400n * 365n, 0],
  [JULIAN_ZERO_S - 1n, 0], // before 4713 BC
  [JULIAN_ZERO_S - 86400n * 365n * 1000n, 0],
  [-62_135_596_801n, 0], // before year 1
  [253_402_300_800n, 0], // year 10000
  [9_224_318_016_000n, 0], // past Postgres's 294276 AD
  [2n ** 63n - 1n, 0],
  [-(2n ** 63n), 0],
  [NOW_S, 1_000_000_000], // nanos out of range
  [NOW_S, -1],
];

const BIG_ID = ["18446744073709551616", "18446744073709551615", "9223372036854775808", "9223372036854775807", "99999999999999999999999"];
const ODD_STRINGS = [
  "",
  "\u0000",
  "a\u0000b",
  "\ud800", // lone surrogate (encodes as U+FFFD)
  "💥",
  "\u202etxt.exe",
  "'; DROP TABLE jobwire.jobs; --",
  "%_\\",
  "../../etc/passwd",
  "\r\n\r\nHTTP/1.1 200 OK",
  " fz-a",
  "FZ-A",
  "-1",
  "1e3",
  "0x10",
  "NaN",
];
const UUIDS = ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", "6f1c1b46-8c1e-4d0a-9f64-4a4f5b7d2c11"];
export const CRONS = ["* * * * *", "0 3 * * *", "@hourly", "@yearly", "61 * * * *", "*/0 * * * *", "* * * * * *", "0 0 30 2 *", "0 0 31 4 *", "@every 1s", "", "a b c d e", "0-59/1 0-23 1-31 1-12 0-6"];

/** Real ids and lease tokens collected from the broker before the run (see state.ts). */
export interface Pools {
  jobIds: string[];
  tokens: string[];
}

export function longString(rng: Rng): string {
  return rng.pick(["x".repeat(256), "y".repeat(4097), "z".repeat(70_000), "w".repeat(1_048_577)]);
}

export function oddString(rng: Rng): string {
  return rng.bool(0.15) ? longString(rng) : rng.pick(ODD_STRINGS);
}

export function jobId(rng: Rng, pools: Pools): string {
  if (pools.jobIds.length > 0 && rng.bool(0.4)) return rng.pick(pools.jobIds);
  return rng.pick([...BIG_ID, "1", "0", "-1", "abc", "1.5", " 1", "1 ", "٣"]);
}

export function leaseToken(rng: Rng, pools: Pools): string {
  const real = pools.tokens.length > 0 ? rng.pick(pools.tokens) : `1.${UUIDS[2]}`;
  switch (rng.int(8)) {
    case 0:
      return real;
    case 1: {
      // Another job's uuid on this job's id (issue 14, finding 6).
      const other = pools.tokens.length > 1 ? rng.pick(pools.tokens) : real;
      return `${real.split(".")[0]}.${other.split(".").slice(1).join(".")}`;
    }
    case 2:
      return `${rng.pick(BIG_ID)}.${rng.pick(UUIDS)}`;
    case 3:
      return `${"9".repeat(19)}.${rng.pick(UUIDS)}`;
    case 4:
      return real.toUpperCase();
    case 5:
      return real.slice(0, rng.int(real.length));
    case 6:
      return `${real}\u0000`;
    default:
      return oddString(rng);
  }
}

/** A string for a field, chosen by what its name suggests. */
export function stringFor(field: string, rng: Rng, pools: Pools, extreme: boolean): string {
  const f = field.toLowerCase();
  if (f.includes("token") && !f.includes("page")) return extreme ? leaseToken(rng, pools) : rng.pick(pools.tokens.length ? pools.tokens : [`1.${UUIDS[0]}`]);
  if (f === "id" || f.endsWith("jobid") || f.endsWith("ids") || f === "lastjobid") return extreme ? jobId(rng, pools) : rng.pick(pools.jobIds.length ? pools.jobIds : ["1"]);
  if (f.includes("queue")) return extreme ? rng.pick([...QUEUES, ...ODD_STRINGS, "q".repeat(129), "a".repeat(128)]) : rng.pick(QUEUES);
  if (f === "type") return extreme ? oddString(rng) : rng.pick(TYPES);
  if (f === "cron") return rng.pick(CRONS);
  if (f.includes("pagetoken")) return extreme ? rng.pick(["!!!", "AAAA", "eyJpZCI6LTF9", "-1", "99999999999999999999", oddString(rng)]) : "";
  if (f === "contenttype") return extreme ? rng.pick(["application/json", "text/plain", "", "\u0000", "a/b".repeat(100)]) : "application/json";
  if (f.includes("symbol") || f.includes("filename") || f.includes("service")) {
    return rng.pick(["jobwire.v1.JobService", "jobwire.v1.Job", "jobwire/v1/job.proto", "google/protobuf/duration.proto", "jobwire.v1.JobService.Enqueue", "nope", ...ODD_STRINGS]);
  }
  if (extreme) return oddString(rng);
  return rng.pick(["fz", "a", "hello"]);
}
