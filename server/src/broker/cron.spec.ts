import { describe, expect, it } from "vitest";
import { CronError, nextFire, parseCron } from "./cron.js";

const next = (expr: string, after: string) => nextFire(parseCron(expr), new Date(after))?.toISOString() ?? null;

/** The next n fire times after `after`. */
function fires(expr: string, after: string, n: number): string[] {
  const c = parseCron(expr);
  const out: string[] = [];
  let t = new Date(after);
  for (let i = 0; i < n; i++) {
    t = nextFire(c, t)!;
    out.push(t.toISOString());
  }
  return out;
}

describe("nextFire", () => {
  it("every minute: the next whole minute, strictly after", () => {
    expect(next("* * * * *", "2026-11-24T03:30:00.000Z")).toBe("2026-11-24T03:31:00.000Z");
    expect(next("* * * * *", "2026-11-24T03:30:59.999Z")).toBe("2026-11-24T03:31:00.000Z");
  });

  it("steps, ranges and lists", () => {
    expect(fires("*/15 * * * *", "2026-11-24T03:31:00Z", 3)).toEqual(["2026-11-24T03:45:00.000Z", "2026-11-24T04:00:00.000Z", "2026-11-24T04:15:00.000Z"]);
    expect(fires("10-50/20 9,17 * * *", "2026-11-24T00:00:00Z", 4)).toEqual([
      "2026-11-24T09:10:00.000Z",
      "2026-11-24T09:30:00.000Z",
      "2026-11-24T09:50:00.000Z",
      "2026-11-24T17:10:00.000Z",
    ]);
    expect(fires("5/20 * * * *", "2026-11-24T00:00:00Z", 3)).toEqual(["2026-11-24T00:05:00.000Z", "2026-11-24T00:25:00.000Z", "2026-11-24T00:45:00.000Z"]);
  });

  it("weekday names, and 7 as Sunday", () => {
    // 2026-11-24 is a Tuesday.
    expect(fires("0 3 * * MON-FRI", "2026-11-27T04:00:00Z", 2)).toEqual(["2026-11-30T03:00:00.000Z", "2026-12-01T03:00:00.000Z"]);
    expect(next("0 0 * * 7", "2026-11-24T00:00:00Z")).toBe("2026-11-29T00:00:00.000Z");
    expect(next("0 0 * * sun", "2026-11-24T00:00:00Z")).toBe("2026-11-29T00:00:00.000Z");
  });

  it("day-of-month OR day-of-week when both are restricted", () => {
    // The 1st, or any Friday.
    expect(fires("0 12 1 * FRI", "2026-11-24T00:00:00Z", 3)).toEqual(["2026-11-27T12:00:00.000Z", "2026-12-01T12:00:00.000Z", "2026-12-04T12:00:00.000Z"]);
  });

  it("month ends, leap days and year ends", () => {
    expect(fires("0 0 31 * *", "2026-11-24T00:00:00Z", 2)).toEqual(["2026-12-31T00:00:00.000Z", "2027-01-31T00:00:00.000Z"]);
    expect(next("0 0 29 2 *", "2026-03-01T00:00:00Z")).toBe("2028-02-29T00:00:00.000Z");
    expect(next("@yearly", "2026-12-31T23:59:00Z")).toBe("2027-01-01T00:00:00.000Z");
    expect(next("0 0 1 JAN,JUL *", "2026-11-24T00:00:00Z")).toBe("2027-01-01T00:00:00.000Z");
  });

  it("macros", () => {
    expect(next("@hourly", "2026-11-24T03:30:00Z")).toBe("2026-11-24T04:00:00.000Z");
    expect(next("@daily", "2026-11-24T03:30:00Z")).toBe("2026-11-25T00:00:00.000Z");
    expect(next("@weekly", "2026-11-24T03:30:00Z")).toBe("2026-11-29T00:00:00.000Z");
    expect(next("@monthly", "2026-11-24T03:30:00Z")).toBe("2026-12-01T00:00:00.000Z");
  });

  it("returns null for a date that never comes", () => {
    expect(next("0 0 30 2 *", "2026-11-24T00:00:00Z")).toBeNull();
  });
});

describe("parseCron errors say what is wrong", () => {
  it.each([
    ["* * * *", /needs 5 fields/],
    ["60 * * * *", /minute: "60" is not a value from 0 to 59/],
    ["* 24 * * *", /hour/],
    ["* * 0 * *", /day of month/],
    ["* * * FOO *", /month: "FOO"/],
    ["* * * * 8", /day of week/],
    ["*/0 * * * *", /step "0"/],
    ["5-1 * * * *", /runs backwards/],
    ["1,,2 * * * *", /empty list item/],
    ["@fortnightly", /unknown macro/],
  ])("%s", (expr, message) => {
    expect(() => parseCron(expr)).toThrow(CronError);
    expect(() => parseCron(expr)).toThrow(message);
  });
});
