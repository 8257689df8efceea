import pg from "pg";
import { describe, expect, it } from "vitest";
import { createTestDatabase } from "../testing/index.js";
import { createPool, parseTimestamptz, parseTimestamptzSlow as parseDate } from "./db.js";

describe("parseTimestamptz", () => {
  it("is installed for timestamptz", () => {
    expect(pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ)).toBe(parseTimestamptz);
  });

  const fixed = [
    "2026-11-24 05:40:36.123456+00",
    "2026-11-24 05:40:36+00",
    "2026-11-24 05:40:36.1+00",
    "2026-11-24 05:40:36.999999+05:30",
    "2026-11-24 05:40:36.5-08",
    "2026-11-24 05:40:36-03:30",
    "1901-12-13 20:45:52+00:09:21",
    "1000-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "0099-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00 BC",
    "12345-01-01 00:00:00+00",
    "infinity",
    "-infinity",
  ];
  for (const s of fixed) {
    it(`reads ${JSON.stringify(s)} as the default parser does`, () => {
      expect(parseTimestamptz(s)).toEqual(parseDate(s));
    });
  }

  it("reads 10,000 timestamps spread over years, fractions and offsets as the default parser does", () => {
    const pad = (v: number, w = 2) => String(v).padStart(w, "0");
    const start = Date.UTC(1000, 0, 1);
    const step = (Date.UTC(9999, 0, 1) - start) / 10_000;
    for (let k = 0; k < 10_000; k++) {
      // Steps that share no factor with the cycles below, so every mix comes up.
      const d = new Date(start + Math.floor(k * step) + ((k * 7919) % 86_400_000));
      const frac = k % 5 === 0 ? "" : `.${pad((k * 104_729) % 1_000_000, 6)}`.replace(/0+$/, "").replace(/\.$/, "");
      const off = (k % 29) - 14;
      const offMin = k % 3 === 0 ? `:${pad((k % 4) * 15)}` : "";
      const s = `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac}${off < 0 ? "-" : "+"}${pad(Math.abs(off))}${offMin}`;
      expect(parseTimestamptz(s), s).toEqual(parseDate(s));
    }
  });
});

describe("parseTimestamptz's memory of recent texts", () => {
  it("answers repeats with equal but separate Dates, and forgets nothing it should not", () => {
    const a = "2026-11-24 05:40:36.123456+00";
    const b = "2026-11-24 05:41:06.5+00";
    const c = "2026-11-24 05:40:36.123456+01";
    const seq = [a, a, b, a, b, b, c, a, c, b, a, "infinity", a, "-infinity", c];
    const got = seq.map((s) => parseTimestamptz(s));
    seq.forEach((s, i) => expect(got[i], `${i}: ${s}`).toEqual(parseDate(s)));
    // A caller that changes its Date must not change anyone else's.
    const first = got[0] as Date;
    first.setTime(0);
    expect(got[1]).toEqual(parseDate(a));
    expect(parseTimestamptz(a)).toEqual(parseDate(a));
    expect(new Set(got.filter((d) => d instanceof Date)).size).toBe(got.filter((d) => d instanceof Date).length);
  });
});

describe("createPool", () => {
  it("reports a checked-out connection that dies between queries, rather than crashing", async () => {
    const errors: Error[] = [];
    const pool = createPool(await createTestDatabase(), 2, (err) => errors.push(err));
    const other = new pg.Client({ connectionString: await createTestDatabase() });
    try {
      const client = await pool.connect();
      const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
      // Checked out and idle: the pool's own idle listener is not attached now.
      const died = new Promise<void>((resolve) => client.once("end", () => resolve()));
      await other.connect();
      await other.query("SELECT pg_terminate_backend($1)", [rows[0]!.pid]);
      await died;
      expect(errors.map((e) => (e as { code?: string }).code)).toContain("57P01");
      client.release(errors[0]);
      // The pool is still usable.
      expect((await pool.query("SELECT 1 AS one")).rows[0].one).toBe(1);
    } finally {
      await other.end();
      await pool.end();
    }
  });
});
