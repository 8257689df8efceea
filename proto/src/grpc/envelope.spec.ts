import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { MessageSplitter, frame, unaryMessage } from "./envelope.js";

const msg = (n: number, fill: number) => new Uint8Array(n).fill(fill);

function codeOf(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof ConnectError ? err.code : undefined;
  }
  return undefined;
}

describe("frames", () => {
  it("carry one message behind a flag byte and a big-endian length", () => {
    const f = frame(msg(300, 7));
    expect([...f.subarray(0, 5)]).toEqual([0, 0, 0, 1, 44]);
    expect(unaryMessage(f, 1000)).toEqual(msg(300, 7));
    expect(unaryMessage(f, 1000)).not.toBeInstanceOf(Buffer);
  });

  it("refuse a unary body that is not exactly one uncompressed message within the limit", () => {
    const f = frame(msg(10, 1));
    expect(codeOf(() => unaryMessage(f.subarray(0, 3), 100))).toBe(Code.InvalidArgument);
    expect(codeOf(() => unaryMessage(new Uint8Array([...f, ...f]), 100))).toBe(Code.InvalidArgument);
    expect(codeOf(() => unaryMessage(new Uint8Array([1, ...f.subarray(1)]), 100))).toBe(Code.InvalidArgument);
    expect(codeOf(() => unaryMessage(f, 9))).toBe(Code.ResourceExhausted);
  });
});

describe("MessageSplitter", () => {
  it("finds messages however the chunks cut them, headers included", () => {
    const messages = [msg(0, 0), msg(1, 1), msg(200, 2), msg(70_000, 3), msg(5, 4)];
    const stream = new Uint8Array(messages.reduce((n, m) => n + 5 + m.length, 0));
    let at = 0;
    for (const m of messages) {
      stream.set(frame(m), at);
      at += 5 + m.length;
    }
    for (const size of [1, 3, 5, 7, 64, 1000, 100_000]) {
      const s = new MessageSplitter(1 << 20);
      const out: Uint8Array[] = [];
      for (let i = 0; i < stream.length; i += size) {
        s.push(Buffer.from(stream.subarray(i, i + size)));
        for (let m = s.next(); m !== undefined; m = s.next()) out.push(m);
      }
      expect(out.map((m) => Buffer.from(m).toString("hex"))).toEqual(messages.map((m) => Buffer.from(m).toString("hex")));
      expect(s.pending).toBe(0);
      for (const m of out) expect(m).not.toBeInstanceOf(Buffer);
    }
  });

  it("refuses a message over the limit, and a compressed one, as soon as its header is in", () => {
    const big = new MessageSplitter(100);
    big.push(frame(msg(101, 0)).subarray(0, 5));
    expect(codeOf(() => big.next())).toBe(Code.ResourceExhausted);
    const zipped = new MessageSplitter(100);
    zipped.push(new Uint8Array([1, 0, 0, 0, 1, 9]));
    expect(codeOf(() => zipped.next())).toBe(Code.Internal);
  });
});
