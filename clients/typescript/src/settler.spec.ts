import { describe, expect, it } from "vitest";
import { silentLogger } from "./logger.js";
import { Settler, type SettlerOptions } from "./settler.js";
import { fakeBroker, type FakeBroker } from "./testing/fake-broker.js";

function settler(fb: FakeBroker, opts: Partial<SettlerOptions> = {}): Settler {
  return new Settler({
    client: fb.client,
    ackFlushMs: 60_000, // only flush() or a full batch sends
    ackMaxBatch: 100,
    rpcTimeoutMs: 1000,
    backoff: { initialMs: 5, maxMs: 20, multiplier: 2 },
    logger: silentLogger,
    ...opts,
  });
}

describe("Settler.flush", () => {
  it("sends what is owed at once and waits for the answers", async () => {
    const fb = fakeBroker();
    const s = settler(fb);
    const tokens = [fb.add(), fb.add(), fb.add()];
    const results = tokens.map((t) => s.ack(t));
    expect(s.pending).toBe(3);
    expect(await s.flush(Date.now() + 5000)).toBe(0);
    expect(await Promise.all(results)).toEqual(tokens.map(() => ({ kind: "acked" })));
    expect(fb.acks.flat().sort()).toEqual([...tokens].sort());
    expect(s.pending).toBe(0);
  });

  it("retries acks that fail with UNAVAILABLE until they are answered", async () => {
    const fb = fakeBroker();
    const s = settler(fb);
    const token = fb.add();
    fb.failAcks(2);
    const result = s.ack(token);
    expect(await s.flush(Date.now() + 5000)).toBe(0);
    expect(await result).toEqual({ kind: "acked" });
  });

  it("abandons what is still owed at the deadline, and says how much", async () => {
    const fb = fakeBroker();
    const s = settler(fb);
    const release = fb.holdAcks();
    const acks = [fb.add(), fb.add()].map((t) => s.ack(t));
    const nack = s.nack({ token: fb.add(), error: "boom", permanent: false });
    expect(s.pending).toBe(3);
    // The nack is answered; the two acks are stuck in a held Ack call.
    expect(await s.flush(Date.now() + 100)).toBe(2);
    for (const r of await Promise.all(acks)) expect(r.kind).toBe("abandoned");
    expect((await nack).kind).toBe("nacked");
    release();
  });
});
