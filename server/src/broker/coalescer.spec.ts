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

  it("runs a failed shared call again per caller, so only the guilty caller gets the error", async () => {
    const calls: number[][] = [];
    const gate = deferred<void>();
    const c = new Coalescer<number, number>(async (items) => {
      calls.push(items);
      await gate.promise;
      if (items.includes(-1)) throw new Error("value out of range");
      return items.map((i) => i * 10);
    }, 100, 1);
    const busy = c.submit([0]);
    const good = c.submit([1, 2]);
    const bad = c.submit([-1]);
    const alsoGood = c.submit([3]);
    gate.resolve();
    expect(await busy).toEqual([0]);
    expect(await good).toEqual([10, 20]);
    await expect(bad).rejects.toThrow("value out of range");
    expect(await alsoGood).toEqual([30]);
    expect(calls).toEqual([[0], [1, 2, -1, 3], [1, 2], [-1], [3]]);
  });

  it("fails every caller at once when the fault is shared (the database is down)", async () => {
    const calls: number[][] = [];
    const gate = deferred<void>();
    const c = new Coalescer<number, number>(
      async (items) => {
        calls.push(items);
        await gate.promise;
        if (calls.length > 1) throw new Error("db down");
        return items;
      },
      100,
      1,
      (err) => (err as Error).message === "db down",
    );
    const busy = c.submit([0]);
    const a = c.submit([1]);
    const b = c.submit([2]);
    gate.resolve();
    expect(await busy).toEqual([0]);
    await expect(a).rejects.toThrow("db down");
    await expect(b).rejects.toThrow("db down");
    expect(calls).toEqual([[0], [1, 2]]);
  });
});
