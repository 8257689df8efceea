import { describe, expect, it } from "vitest";
import { Coalescer } from "./coalescer.js";

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe("Coalescer", () => {
  it("runs alone when idle, batches while busy, and hands each caller its own results", async () => {
    const calls: number[][] = [];
    const gates: ReturnType<typeof deferred<void>>[] = [];
    const c = new Coalescer<number, number>(async (items) => {
      calls.push(items);
      const g = deferred<void>();
      gates.push(g);
      await g.promise;
      return items.map((i) => i * 10);
    }, 100, 1);
    const a = c.submit([1]);
    const b = c.submit([2, 3]);
    const d = c.submit([4]);
    expect(calls).toEqual([[1]]);
    gates[0]!.resolve();
    expect(await a).toEqual([10]);
    await Promise.resolve();
    expect(calls).toEqual([[1], [2, 3, 4]]);
    gates[1]!.resolve();
    expect(await b).toEqual([20, 30]);
    expect(await d).toEqual([40]);
  });

  it("never exceeds maxItems per run, and fails only the callers of a failed run", async () => {
    const calls: number[][] = [];
    let fail = true;
    const gate = deferred<void>();
    const c = new Coalescer<number, number>(async (items) => {
      calls.push(items);
      await gate.promise;
      if (fail) {
        fail = false;
        throw new Error("db down");
      }
      return items;
    }, 3, 1);
    const first = c.submit([1, 2]);
    const second = c.submit([3, 4]);
    const third = c.submit([5]);
    gate.resolve();
    await expect(first).rejects.toThrow("db down");
    expect(await second).toEqual([3, 4]);
    expect(await third).toEqual([5]);
    expect(calls).toEqual([[1, 2], [3, 4, 5]]);
  });
});
