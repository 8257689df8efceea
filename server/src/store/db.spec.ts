import pg from "pg";
import { describe, expect, it } from "vitest";
import { parseTimestamptz, parseTimestamptzSlow as parseDate } from "./db.js";

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
