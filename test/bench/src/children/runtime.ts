/**
 * The side of the IPC protocol (see protocol.ts) that every worker and
 * producer process shares: read the spec, prepare, say ready, run on go,
 * report progress, hand back the result on stop (or when the work ends by
 * itself), exit.
 */
import type { ChildMessage, ChildSpec, ParentMessage, ProducerResult, WorkerResult } from "../protocol.js";

export const PROGRESS_INTERVAL_MS = 25;

export interface ChildRun {
  /** Cumulative count for the progress bar and the parent's end-of-run check. */
  progress(): number;
  /** Starts the work. Producers resolve when they are done; workers never need to. */
  go(): Promise<void>;
  /** Stops and reports. Called once, after go() resolved or on the parent's stop. */
  stop(): Promise<WorkerResult | ProducerResult>;
}

function send(m: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(m, undefined, undefined, () => resolve());
  });
}

export function runChild<S extends ChildSpec>(prepare: (spec: S) => Promise<ChildRun>): void {
  const main = async () => {
    const raw = process.env.BENCH_SPEC;
    if (!raw) throw new Error("BENCH_SPEC is not set: this file is started by the bench, not by hand");
    const spec = JSON.parse(raw) as S;
    const run = await prepare(spec);
    let stopping: Promise<void> | null = null;
    let timer: NodeJS.Timeout | undefined;
    let last = -1;
    const report = () => {
      const count = run.progress();
      if (count !== last) {
        last = count;
        void send({ type: "progress", count });
      }
    };
    const finish = () => {
      stopping ??= (async () => {
        clearInterval(timer);
        const result = await run.stop();
        report();
        await send({ type: "result", result });
        process.exit(0);
      })();
      return stopping;
    };
    process.on("message", (m: ParentMessage) => {
      if (m.type === "go") {
        timer = setInterval(report, PROGRESS_INTERVAL_MS);
        run.go().then(
          () => (spec.role === "producer" ? finish() : undefined),
          (err) => fail(err),
        );
      } else if (m.type === "stop") {
        void finish().catch(fail);
      }
    });
    // The parent died: do not linger.
    process.on("disconnect", () => process.exit(1));
    await send({ type: "ready" });
  };
  main().catch(fail);
}

function fail(err: unknown): void {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  void send({ type: "failed", message }).finally(() => process.exit(1));
}

/** A growable typed array of job indices (and, optionally, times). */
export class Recorder {
  private idx = new Uint32Array(1024);
  private at = new Float64Array(0);
  private n = 0;
  constructor(private readonly withTimes: boolean) {
    if (withTimes) this.at = new Float64Array(1024);
  }
  add(i: number, t: number): void {
    if (this.n === this.idx.length) {
      const bigger = new Uint32Array(this.n * 2);
      bigger.set(this.idx);
      this.idx = bigger;
      if (this.withTimes) {
        const a = new Float64Array(this.n * 2);
        a.set(this.at);
        this.at = a;
      }
    }
    this.idx[this.n] = i;
    if (this.withTimes) this.at[this.n] = t;
    this.n++;
  }
  get count(): number {
    return this.n;
  }
  indices(): Uint32Array {
    return this.idx.slice(0, this.n);
  }
  times(): Float64Array {
    return this.withTimes ? this.at.slice(0, this.n) : new Float64Array(0);
  }
}

/** A growable list of numbers (call durations). */
export class Samples {
  private a = new Float64Array(1024);
  private n = 0;
  add(v: number): void {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.n * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v;
  }
  values(): Float64Array {
    return this.a.slice(0, this.n);
  }
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
