/**
 * The broker under test: `node server/dist/main.js`, a real process on
 * loopback, configured only through its environment. It is started on a
 * fixed port once it has one, so that a replica killed and started again
 * comes back where its workers and producers look for it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cleanEnv, rssKiB, withTimeout } from "./util.js";

export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const BROKER_MAIN = fileURLToPath(new URL("../../../../server/dist/main.js", import.meta.url));

/** The broker's entry point: server/dist/main.js, or another build named with --broker. */
let brokerMain = BROKER_MAIN;
export function setBrokerMain(file: string): void {
  brokerMain = path.resolve(file);
}
export function getBrokerMain(): string {
  return brokerMain;
}

const READY_TIMEOUT_MS = 30_000;
/** SIGTERM drains for JOBWIRE_SHUTDOWN_TIMEOUT_MS (10 s by default); then we SIGKILL. */
const STOP_TIMEOUT_MS = 15_000;
const KILL_TIMEOUT_MS = 5_000;

/** What the broker logged at warn and error level, grouped by message and cause. */
export class LogSummary {
  readonly counts = new Map<string, number>();
  /** The last lines of stderr that were not JSON (a crash's stack trace). */
  readonly rawTail: string[] = [];

  add(line: string): void {
    let rec: { level?: string; msg?: string; err?: { message?: string } | string; method?: string };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      this.rawTail.push(line);
      if (this.rawTail.length > 40) this.rawTail.shift();
      return;
    }
    if (rec.level !== "warn" && rec.level !== "error") return;
    const cause = typeof rec.err === "string" ? rec.err : rec.err?.message;
    const key = `${rec.level}: ${rec.msg ?? "?"}${rec.method ? ` (${rec.method})` : ""}${cause ? `: ${cause.slice(0, 160)}` : ""}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  /** "N× message" lines, errors first, then the most frequent. */
  top(n = 8): string[] {
    const rank = (k: string) => (k.startsWith("error:") ? 0 : 1);
    return [...this.counts.entries()]
      .sort((a, b) => rank(a[0]) - rank(b[0]) || b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `${v}× ${k}`);
  }
}

export interface BrokerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when we sent the signal that ended it. */
  expected: boolean;
}

export class Broker {
  port = 0;
  private proc: ChildProcess | null = null;
  private exited: Promise<BrokerExit> | null = null;
  private expectingExit = false;
  private readonly log: WriteStream;
  readonly logs = new LogSummary();
  /** Exits we did not cause (crashes). */
  readonly crashes: BrokerExit[] = [];
  onCrash: ((exit: BrokerExit) => void) | null = null;
  /** The inspector's WebSocket URL, when started with `inspect`. */
  inspectorUrl: string | null = null;

  constructor(
    readonly name: string,
    private readonly env: Record<string, string>,
    logFile: string,
    /** Start with --inspect on a free loopback port (the fuzzer asks it for a GC before reading RSS). */
    private readonly inspect = false,
  ) {
    this.log = createWriteStream(logFile, { flags: "a" });
  }

  get address(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  rssKiB(): number | null {
    return this.proc?.pid === undefined ? null : rssKiB(this.proc.pid);
  }

  /** Starts the process and resolves once it prints its address. */
  async start(): Promise<void> {
    if (this.running) return;
    const env = cleanEnv({ ...this.env, JOBWIRE_PORT: String(this.port), JOBWIRE_HOST: "127.0.0.1" });
    const args = this.inspect ? ["--inspect=127.0.0.1:0", brokerMain] : [brokerMain];
    const proc = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    this.expectingExit = false;
    let pending = "";
    proc.stderr!.setEncoding("utf8");
    proc.stderr!.on("data", (chunk: string) => {
      this.log.write(chunk);
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const l of lines) {
        const ws = /^Debugger listening on (ws:\/\/\S+)/.exec(l);
        if (ws) this.inspectorUrl = ws[1]!;
        else if (l.trim() && !l.startsWith("For help, see: https://nodejs.org")) this.logs.add(l);
      }
    });
    this.exited = new Promise<BrokerExit>((resolve) =>
      proc.once("exit", (code, signal) => {
        const exit = { code, signal, expected: this.expectingExit };
        if (!exit.expected) {
          this.crashes.push(exit);
          this.onCrash?.(exit);
        }
        resolve(exit);
      }),
    );
    const address = await withTimeout(
      new Promise<string>((resolve, reject) => {
        let buf = "";
        proc.stdout!.setEncoding("utf8");
        proc.stdout!.on("data", (chunk: string) => {
          buf += chunk;
          const m = /jobwire listening on http:\/\/[^\s:]+:(\d+)/.exec(buf);
          if (m) resolve(m[1]!);
        });
        proc.once("exit", (code, signal) => reject(new Error(`broker ${this.name} exited (${signal ?? code}) before listening; see ${this.log.path}`)));
      }),
      READY_TIMEOUT_MS,
      `broker ${this.name} listening`,
    ).catch((err) => {
      proc.kill("SIGKILL");
      throw err;
    });
    this.port = Number(address);
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.running || !this.proc) return;
    this.expectingExit = true;
    this.proc.kill(signal);
    await withTimeout(this.exited!, KILL_TIMEOUT_MS, `broker ${this.name} exit after ${signal}`);
  }

  /** Graceful stop (SIGTERM, the broker drains), then SIGKILL if it takes too long. */
  async stop(): Promise<void> {
    if (!this.running || !this.proc) return;
    this.expectingExit = true;
    this.proc.kill("SIGTERM");
    try {
      await withTimeout(this.exited!, STOP_TIMEOUT_MS, `broker ${this.name} exit after SIGTERM`);
    } catch {
      await this.kill("SIGKILL");
    }
  }

  close(): void {
    this.log.end();
  }
}
