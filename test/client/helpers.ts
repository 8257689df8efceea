/**
 * Shared fixtures for the TypeScript client's end-to-end tests: a real
 * broker (the lead's in-process test broker, on its own cloned database),
 * a JobwireClient on it, workers that stop with the test, and bounded waits.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  type Handler,
  type JobInfo,
  type JobStateName,
  JobwireClient,
  type Logger,
  Worker,
  type WorkerOptions,
  silentLogger,
} from "@jobwire/client";
import { type TestBroker, startTestBroker } from "@jobwire/server/testing";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const FIXTURES = path.join(REPO_ROOT, "test/client/fixtures");

let n = 0;
/** A queue name no other test or scenario uses. */
export function uniqueQueue(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${n++}`;
}

/** Logs through console when JOBWIRE_TEST_LOG is set; silent otherwise. */
export const testLogger: Logger = process.env.JOBWIRE_TEST_LOG
  ? {
      debug: (m) => console.log(`[worker debug] ${m}`),
      info: (m) => console.log(`[worker] ${m}`),
      warn: (m) => console.warn(`[worker warn] ${m}`),
      error: (m) => console.error(`[worker error] ${m}`),
    }
  : silentLogger;

export interface Env {
  tb: TestBroker;
  client: JobwireClient;
  /** Starts a worker on this broker; it is stopped by teardown() if still running. */
  worker(opts: Partial<WorkerOptions> & { queues: string[]; handlers: Record<string, Handler> }): RunningWorker;
  teardown(): Promise<void>;
}

export interface RunningWorker {
  worker: Worker;
  /** run()'s promise. */
  done: Promise<void>;
}

/** One broker (and database) per test file; call in beforeAll. */
export async function setup(): Promise<Env> {
  const tb = await startTestBroker();
  const client = new JobwireClient({ address: tb.url, timeoutMs: 5000 });
  const workers: RunningWorker[] = [];
  return {
    tb,
    client,
    worker(opts) {
      const worker = new Worker({
        address: tb.url,
        handleSignals: false,
        logger: testLogger,
        reconnectBackoff: { initialMs: 50, maxMs: 500 },
        shutdownTimeoutMs: 5000,
        ...opts,
      });
      const rw = { worker, done: worker.run() };
      // Surface a failed run() in the test that awaits it, not as unhandled.
      rw.done.catch(() => {});
      workers.push(rw);
      return rw;
    },
    async teardown() {
      await Promise.allSettled(workers.map((w) => w.worker.stop()));
      client.close();
      await tb.stop();
    },
  };
}

/**
 * Polls `check` until it returns something other than undefined. Waiting
 * on the broker's view of a job is the signal these tests wait on; every
 * wait is bounded.
 */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
}

/** Waits until the job is in `state` and returns it. */
export function waitForState(client: JobwireClient, id: string, state: JobStateName, timeoutMs = 10_000): Promise<JobInfo> {
  let seen = "";
  return eventually(
    async () => {
      const j = await client.getJob(id);
      seen = j.state;
      return j.state === state ? j : undefined;
    },
    timeoutMs,
    `job ${id} to be ${state}`,
  ).catch((err: Error) => {
    err.message += ` (last seen: ${seen || "nothing"})`;
    throw err;
  });
}

/** A promise a test resolves by hand. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  settled: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const d: Deferred<T> = {
    promise: new Promise<T>((r) => {
      resolve = r;
    }),
    resolve: (v) => {
      d.settled = true;
      resolve(v);
    },
    settled: false,
  };
  return d;
}

/** Rejects if `p` does not settle within `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}

/** Resolves after `ms`: only for simulating a handler's work, never to wait for a result. */
export function work(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** A child process whose stdout lines can be awaited. */
export interface Child {
  proc: ChildProcess;
  lines: string[];
  /** Waits for a stdout line matching `re`; returns the match. */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  stderr(): string;
}

export function spawnNode(script: string, env: Record<string, string>, args: string[] = []): Child {
  const proc = spawn(process.execPath, [script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let err = "";
  proc.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
    if (process.env.JOBWIRE_TEST_LOG) process.stderr.write(`[${path.basename(script)}] ${d.toString()}`);
  });
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    lines.push(line);
    if (process.env.JOBWIRE_TEST_LOG) console.log(`${new Date().toISOString()} [${path.basename(script)}] ${line}`);
    for (const w of [...waiters]) w();
  });
  const exited = once(proc, "exit").then(([code, signal]) => (code ?? signal) as number | string);
  let dead = false;
  void exited.then(() => {
    dead = true;
    for (const w of [...waiters]) w();
  });
  return {
    proc,
    lines,
    exited,
    stderr: () => err,
    waitFor(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          for (const l of lines) {
            const m = l.match(re);
            if (m) {
              done();
              resolve(m);
              return true;
            }
          }
          if (dead) {
            done();
            reject(new Error(`${path.basename(script)} exited before printing ${re}; stderr:\n${err}`));
            return true;
          }
          return false;
        };
        const t = setTimeout(() => {
          done();
          reject(new Error(`timed out after ${timeoutMs}ms waiting for ${re} from ${path.basename(script)}; stderr:\n${err}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(t);
          waiters.delete(waiter);
        };
        const waiter = (): void => void check();
        if (!check()) waiters.add(waiter);
      });
    },
  };
}

/** Kills a child if it is still running; waits for it to exit (bounded). */
export async function reap(c: Child | undefined): Promise<void> {
  if (c === undefined || c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill("SIGKILL");
  await within(c.exited, 5000, "child exit").catch(() => {});
}
