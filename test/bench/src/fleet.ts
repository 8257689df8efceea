/**
 * The parent's side of the IPC protocol: a group of child processes (worker
 * or producer) started together, told to go together, and stopped together.
 * A child that dies or reports a failure fails the scenario.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ChildMessage, ChildSpec, ParentMessage, ProducerResult, WorkerResult } from "./protocol.js";
import { cpuSeconds } from "./procstats.js";
import { ScenarioError, cleanEnv, withTimeout } from "./util.js";

const CHILD_MODULES = {
  "jobwire-worker": "children/jobwire-worker.js",
  "graphile-worker-worker": "children/graphile-worker.js",
  "pg-boss-worker": "children/pgboss-worker.js",
  "bullmq-worker": "children/bullmq-worker.js",
  producer: "children/producer.js",
} as const;

/** How long a child may take to start (load modules, connect). */
const READY_TIMEOUT_MS = 30_000;
/** How long a stopped child may take to hand back its result. */
const STOP_TIMEOUT_MS = 30_000;

function modulePath(spec: ChildSpec): string {
  const key = spec.role === "producer" ? "producer" : (`${spec.system}-worker` as const);
  return fileURLToPath(new URL(CHILD_MODULES[key], import.meta.url));
}

interface Member<R> {
  proc: ChildProcess;
  exited: Promise<void>;
  /** CPU seconds read when the result arrived, just before the process exits. */
  finalCpu: number | null;
  progress: number;
  ready: Promise<void>;
  result: Promise<R>;
}

export class Fleet<R extends WorkerResult | ProducerResult> {
  private readonly members: Member<R>[] = [];
  private failure: ScenarioError | null = null;
  private onFailure: ((e: ScenarioError) => void)[] = [];

  /**
   * Starts one process per spec. `execArgv` adds Node flags (--cpu-prof);
   * `label` names the group in errors.
   */
  constructor(
    readonly label: string,
    specs: ChildSpec[],
    execArgv: string[] = [],
  ) {
    for (const spec of specs) this.members.push(this.spawn(spec, execArgv));
  }

  private spawn(spec: ChildSpec, execArgv: string[]): Member<R> {
    const proc = fork(modulePath(spec), [], {
      env: cleanEnv({ BENCH_SPEC: JSON.stringify(spec) }),
      execArgv,
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    let resultResolve!: (r: R) => void;
    let resultReject!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => ((readyResolve = res), (readyReject = rej)));
    const result = new Promise<R>((res, rej) => ((resultResolve = res), (resultReject = rej)));
    const rejectAll = (e: Error) => {
      readyReject(e);
      resultReject(e);
    };
    // Failures surface through fail(); keep unobserved rejections quiet.
    ready.catch(() => {});
    result.catch(() => {});
    const exited = new Promise<void>((res) => proc.once("exit", () => res()));
    const m: Member<R> = { proc, exited, finalCpu: null, progress: 0, ready, result };
    let gotResult = false;
    proc.on("message", (msg: ChildMessage) => {
      switch (msg.type) {
        case "ready":
          readyResolve();
          break;
        case "progress":
          m.progress = msg.count;
          break;
        case "result":
          gotResult = true;
          if (proc.pid !== undefined) m.finalCpu = cpuSeconds(proc.pid);
          resultResolve(msg.result as R);
          break;
        case "failed":
          this.fail(new ScenarioError(`${this.label} (pid ${proc.pid}) failed: ${msg.message}`), rejectAll);
          break;
      }
    });
    proc.on("exit", (code, signal) => {
      if (!gotResult) this.fail(new ScenarioError(`${this.label} (pid ${proc.pid}) exited (${signal ?? code}) without a result`), rejectAll);
    });
    return m;
  }

  private fail(e: ScenarioError, reject: (e: Error) => void): void {
    if (!this.failure) {
      this.failure = e;
      for (const f of this.onFailure) f(e);
    }
    reject(e);
  }

  /**
   * Rejects as soon as any member fails; use in Promise.race with a wait.
   * A race that is already over leaves it unobserved, so it carries its own
   * catch: a later failure surfaces through stop() or results() instead.
   */
  failed(): Promise<never> {
    const p = new Promise<never>((_, reject) => {
      if (this.failure) reject(this.failure);
      else this.onFailure.push(reject);
    });
    p.catch(() => {});
    return p;
  }

  get pids(): number[] {
    return this.members.map((m) => m.proc.pid).filter((p): p is number => p !== undefined);
  }

  /** CPU seconds used by the members so far (for members that have finished: up to their result). */
  cpuSeconds(): number {
    return this.members.reduce((a, m) => a + (m.finalCpu ?? (m.proc.pid !== undefined ? cpuSeconds(m.proc.pid) : 0)), 0);
  }

  /** Sum of the members' latest progress counts. */
  get progress(): number {
    return this.members.reduce((a, m) => a + m.progress, 0);
  }

  async ready(): Promise<void> {
    await withTimeout(Promise.all(this.members.map((m) => m.ready)), READY_TIMEOUT_MS, `${this.label}: not ready`);
  }

  go(): void {
    for (const m of this.members) send(m.proc, { type: "go" });
  }

  /**
   * Stops every member and collects the results (producers that finished by
   * themselves already sent theirs), then waits for the processes to exit,
   * so that --cpu-prof has written its profile.
   */
  async stop(): Promise<R[]> {
    for (const m of this.members) if (m.proc.connected) send(m.proc, { type: "stop" });
    const results = await withTimeout(Promise.all(this.members.map((m) => m.result)), STOP_TIMEOUT_MS, `${this.label}: no result after stop`);
    await this.exits();
    return results;
  }

  /** Waits for every member's result without asking them to stop (producers end by themselves). */
  async results(timeoutMs: number): Promise<R[]> {
    const results = await withTimeout(Promise.all(this.members.map((m) => m.result)), timeoutMs, `${this.label}: did not finish`);
    await this.exits();
    return results;
  }

  private async exits(): Promise<void> {
    await withTimeout(Promise.all(this.members.map((m) => m.exited)), STOP_TIMEOUT_MS, `${this.label}: did not exit`);
  }

  /** Last resort on any failure: no child outlives the bench. */
  kill(): void {
    for (const m of this.members) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill("SIGKILL");
  }
}

function send(proc: ChildProcess, m: ParentMessage): void {
  try {
    proc.send(m);
  } catch {
    // Already gone: its exit handler reports it.
  }
}
