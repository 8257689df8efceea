import { describe, expect, it } from "vitest";
import { decodeToken, encodeToken } from "./token.js";

/** The token grammar, written the obvious way, as the reference. */
const GRAMMAR = /^(\d{1,19})\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/** Job ids are Postgres bigints. */
const MAX_ID = 2n ** 63n - 1n;

function reference(token: string): { id: string; token: string } | null {
  const m = GRAMMAR.exec(token);
  return m && BigInt(m[1]!) <= MAX_ID ? { id: m[1]!, token: m[2]! } : null;
}

const UUID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

describe("decodeToken", () => {
  it("reads what encodeToken writes", () => {
    expect(decodeToken(encodeToken("42", UUID))).toEqual({ id: "42", token: UUID });
    expect(decodeToken(encodeToken("9223372036854775807", UUID))).toEqual({ id: "9223372036854775807", token: UUID });
  });

  it("refuses ids past the bigint range, which once failed a whole coalesced ack in SQL", () => {
    expect(decodeToken(`9223372036854775808.${UUID}`)).toBeNull();
    expect(decodeToken(`9999999999999999999.${UUID}`)).toBeNull();
    expect(decodeToken(`0000000000000000001.${UUID}`)).toEqual({ id: "0000000000000000001", token: UUID });
  });

  it("agrees with the grammar on every one-character change of valid tokens", () => {
    const valid = [`7.${UUID}`, `007.${UUID}`, `1234567890123456789.${UUID}`, `9223372036854775807.${UUID}`];
    // Each position replaced by each of a set of characters that matter, then
    // each position deleted, then a character inserted at each position.
    const alphabet = ["0", "9", "a", "f", "g", "A", "F", "-", ".", " ", "/", ":", "`", "{", "\u0660", "\u00e9"];
    const cases = new Set<string>(["", ".", UUID, `.${UUID}`, `12345678901234567890.${UUID}`, `1.${UUID}x`, `x1.${UUID}`]);
    for (const v of valid) {
      cases.add(v);
      for (let i = 0; i <= v.length; i++) {
        if (i < v.length) cases.add(v.slice(0, i) + v.slice(i + 1));
        for (const ch of alphabet) {
          if (i < v.length) cases.add(v.slice(0, i) + ch + v.slice(i + 1));
          cases.add(v.slice(0, i) + ch + v.slice(i));
        }
      }
    }
    let accepted = 0;
    for (const c of cases) {
      const want = reference(c);
      expect(decodeToken(c), JSON.stringify(c)).toEqual(want);
      if (want) accepted++;
    }
    // The mutations must include both outcomes to prove anything.
    expect(accepted).toBeGreaterThan(50);
    expect(cases.size - accepted).toBeGreaterThan(1000);
  });
});
