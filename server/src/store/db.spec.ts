import pg from "pg";
import { describe, expect, it } from "vitest";
import { parseTimestamptz, parseTimestamptzSlow as parseDate } from "./db.js";

function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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

  it("reads 10,000 random timestamps as the default parser does", () => {
    const r = random(7);
    const pad = (v: number, w = 2) => String(v).padStart(w, "0");
    for (let k = 0; k < 10_000; k++) {
      const d = new Date(Date.UTC(1000 + Math.floor(r() * 9000), 0, 1) + Math.floor(r() * 365 * 86_400_000));
      const frac = r() < 0.2 ? "" : `.${pad(Math.floor(r() * 1e6), 6)}`.replace(/0+$/, "").replace(/\.$/, "");
      const off = Math.floor(r() * 29 - 14);
      const offMin = r() < 0.3 ? `:${pad(Math.floor(r() * 4) * 15)}` : "";
      const s = `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac}${off < 0 ? "-" : "+"}${pad(Math.abs(off))}${offMin}`;
      expect(parseTimestamptz(s), s).toEqual(parseDate(s));
    }
  });
});
