import { describe, expect, it } from "vitest";
import { createLogger } from "./log.js";

function capture(level: "debug" | "info" = "info") {
  const lines: Record<string, unknown>[] = [];
  let t = 0;
  const log = createLogger(level, (l) => lines.push(JSON.parse(l)), () => t);
  return { log, lines, advance: (ms: number) => (t += ms) };
}

describe("the logger", () => {
  it("writes a repeated warning once per 10 s, then says how many it held back", () => {
    const { log, lines, advance } = capture();
    for (let i = 0; i < 500; i++) log.warn("the job store is unavailable; retry");
    log.warn("claim failed");
    expect(lines.map((l) => [l.msg, l.repeated])).toEqual([
      ["the job store is unavailable; retry", undefined],
      ["claim failed", undefined],
    ]);
    advance(10_000);
    log.warn("the job store is unavailable; retry");
    expect(lines.at(-1)).toMatchObject({ msg: "the job store is unavailable; retry", repeated: 499 });
    // Errors are never held back.
    log.error("internal error");
    log.error("internal error");
    expect(lines.filter((l) => l.msg === "internal error")).toHaveLength(2);
  });

  it("keeps stacks for errors and at debug level, and gives warnings one line of message and code", () => {
    const { log, lines } = capture();
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    log.warn("listen reconnect failed", { err: refused });
    log.error("internal error", { err: new Error("boom") });
    expect(lines[0]!.err).toEqual({ name: "Error", message: "connect ECONNREFUSED 127.0.0.1:5432", code: "ECONNREFUSED" });
    expect((lines[1]!.err as { stack?: string }).stack).toContain("boom");
    const debug = capture("debug");
    debug.log.warn("listen reconnect failed", { err: refused });
    expect((debug.lines[0]!.err as { stack?: string }).stack).toContain("ECONNREFUSED");
  });
});
