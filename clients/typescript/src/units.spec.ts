import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { backoffDelay } from "./backoff.js";
import { buildJobSpec } from "./client.js";
import { dateToTimestamp, durationToMs, msToDuration, timestampToDate } from "./convert.js";
import { FailedPreconditionError, NotFoundError, UnavailableError, isTransient, toJobwireError } from "./errors.js";
import { decodePayload, encodePayload } from "./payload.js";
import { PushQueue } from "./push-queue.js";
import { withRetry } from "./retry.js";
import { truncateUtf8 } from "./settler.js";
import { normalizeAddress } from "./transport.js";

describe("PushQueue", () => {
  it("yields pushed values in order and ends on close", async () => {
    const q = new PushQueue<number>();
    q.push(1);
    const it = q[Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ value: 1, done: false });
    const pending = it.next();
    q.push(2);
    expect(await pending).toEqual({ value: 2, done: false });
    q.push(3);
    q.close();
    expect(q.push(4)).toBe(false);
    expect(await it.next()).toEqual({ value: 3, done: false });
    expect(await it.next()).toEqual({ value: undefined, done: true });
  });

  it("wakes a waiting reader on close", async () => {
    const q = new PushQueue<number>();
    const it = q[Symbol.asyncIterator]();
    const pending = it.next();
    q.close();
    expect(await pending).toEqual({ value: undefined, done: true });
  });
});

describe("backoffDelay", () => {
  it("grows exponentially, stays within [cap/2, cap] and respects the max", () => {
    const o = { initialMs: 100, maxMs: 1000, multiplier: 2 };
    expect(backoffDelay(1, o, () => 0)).toBe(50);
    expect(backoffDelay(1, o, () => 1)).toBe(100);
    expect(backoffDelay(3, o, () => 1)).toBe(400);
    expect(backoffDelay(10, o, () => 1)).toBe(1000);
    expect(backoffDelay(10, o, () => 0)).toBe(500);
  });
});

describe("payloads", () => {
  it("encodes JSON by default and passes bytes through", () => {
    const j = encodePayload({ a: 1 });
    expect(j.contentType).toBe("application/json");
    expect(new TextDecoder().decode(j.bytes)).toBe('{"a":1}');
    const raw = new Uint8Array([1, 2, 3]);
    expect(encodePayload(raw)).toEqual({ bytes: raw, contentType: "application/octet-stream" });
    expect(decodePayload(raw, "application/octet-stream")).toBe(raw);
    expect(decodePayload(j.bytes, "application/json; charset=utf-8")).toEqual({ a: 1 });
    expect(decodePayload(new Uint8Array(), "application/json")).toBeNull();
  });
});

describe("conversions", () => {
  it("round-trips durations and timestamps", () => {
    expect(durationToMs(msToDuration(1500))).toBe(1500);
    expect(durationToMs(msToDuration(50))).toBe(50);
    const d = new Date("2030-01-02T03:04:05.678Z");
    expect(timestampToDate(dateToTimestamp(d))?.getTime()).toBe(d.getTime());
  });

  it("builds a JobSpec from enqueue options", () => {
    const s = buildJobSpec({
      queue: "q",
      type: "t",
      payload: { x: 1 },
      delayMs: 2000,
      maxAttempts: 3,
      leaseDurationMs: 1000,
      retry: { initialBackoffMs: 50 },
      idempotencyKey: "k",
      headers: { a: "b" },
    });
    expect(s.schedule.case).toBe("delay");
    expect(s.maxAttempts).toBe(3);
    expect(durationToMs(s.leaseDuration)).toBe(1000);
    expect(durationToMs(s.retry?.initialBackoff)).toBe(50);
    expect(s.retry?.jitter).toBeUndefined();
    expect(s.headers).toEqual({ a: "b" });
    expect(() => buildJobSpec({ queue: "q", type: "t", runAt: new Date(), delayMs: 1 })).toThrow(/at most one/);
  });
});

describe("errors", () => {
  it("maps ConnectError codes to typed errors", () => {
    expect(toJobwireError(new ConnectError("gone", Code.NotFound))).toBeInstanceOf(NotFoundError);
    const e = toJobwireError(new ConnectError("done already", Code.FailedPrecondition));
    expect(e).toBeInstanceOf(FailedPreconditionError);
    expect(e.code).toBe(Code.FailedPrecondition);
    expect(e.codeName).toBe("FAILED_PRECONDITION");
    expect(e.rawMessage).toBe("done already");
    expect(isTransient(toJobwireError(new ConnectError("x", Code.Unavailable)))).toBe(true);
    expect(isTransient(toJobwireError(new ConnectError("x", Code.DeadlineExceeded)))).toBe(false);
  });
});

describe("withRetry", () => {
  it("retries UNAVAILABLE and gives up on other codes", async () => {
    let calls = 0;
    const r = await withRetry(
      async () => {
        calls++;
        if (calls < 3) throw new ConnectError("down", Code.Unavailable);
        return "ok";
      },
      { timeoutMs: 5000 },
      { initialMs: 1, maxMs: 5 },
    );
    expect(r).toBe("ok");
    expect(calls).toBe(3);
    calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new ConnectError("nope", Code.InvalidArgument);
        },
        {},
        { initialMs: 1 },
      ),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect(calls).toBe(1);
    await expect(
      withRetry(
        async () => {
          throw new ConnectError("down", Code.Unavailable);
        },
        {},
        { initialMs: 1, maxMs: 2, maxAttempts: 2 },
      ),
    ).rejects.toBeInstanceOf(UnavailableError);
  });
});

describe("misc", () => {
  it("normalizes addresses", () => {
    expect(normalizeAddress("localhost:50051")).toBe("http://localhost:50051");
    expect(normalizeAddress(":7000")).toBe("http://127.0.0.1:7000");
    expect(normalizeAddress("http://h:1/")).toBe("http://h:1");
    expect(normalizeAddress("")).toBe("http://127.0.0.1:50051");
  });

  it("truncates nack messages on a character boundary", () => {
    expect(truncateUtf8("abc", 10)).toBe("abc");
    const t = truncateUtf8("ééééé", 5);
    expect(t.startsWith("éé")).toBe(true);
    expect(t).not.toContain("\uFFFD");
  });
});
