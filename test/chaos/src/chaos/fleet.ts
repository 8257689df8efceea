/**
 * The chaos workers: child processes, each pinned to one broker address,
 * killed with SIGKILL by the faults and replaced by fresh processes (with
 * new worker ids, so the jobs each one held can be told apart).
 */
import { fork, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { fileURLToPath } from "node:url";
import { cleanEnv, withTimeout } from "../common/util.js";
import type { WorkerChildSpec } from "./worker-child.js";

const CHILD = fileURLToPath(new URL("./worker-child.js", import.meta.url));
const READY_TIMEOUT_MS = 30_000;
/** The worker's own graceful stop waits 5 s for handlers; then we SIGKILL. */
const STOP_TIMEOUT_MS = 12_000;
const KILL_TIMEOUT_MS = 5_000;

export interface FleetMember {
  slot: number;
  workerId: string;
  /** Index of the broker replica it is pinned to. */
  replica: number;
  proc: ChildProcess;
  ready: Promise<void>;
  exited: Promise<void>;
}

export interface FleetConfig {
  databaseUrl: string;
  queue: string;
  concurrency: number;
  leaseDurationMs: number;
  maxWorkMs: number;
  logFile: string;
}

export class Fleet {
  private readonly members: (FleetMember | null)[] = [];
  private generation = 0;
  private readonly log: WriteStream;
  /** Worker ids by the replica they were pinned to, over the whole run. */
  readonly idsByReplica = new Map<number, string[]>();
  kills = 0;

  constructor(
    private readonly cfg: FleetConfig,
    /** The address of each replica, read at spawn time (ports are fixed once known). */
    private readonly addressOf: (replica: number) => string,
  ) {
    this.log = createWriteStream(cfg.logFile, { flags: "a" });
  }

  /** Starts one worker per entry of `replicas` (the replica each is pinned to) and waits until all are connected. */
  async start(replicas: number[]): Promise<void> {
    replicas.forEach((r, slot) => (this.members[slot] = this.spawn(slot, r)));
    await this.allReady();
  }

  async allReady(): Promise<void> {
    await withTimeout(Promise.all(this.members.map((m) => m?.ready)), READY_TIMEOUT_MS, "chaos workers connected");
  }

  get size(): number {
    return this.members.length;
  }

  /** Ids of the live workers pinned to `replica`. */
  liveIds(replica: number): string[] {
    return this.members.filter((m): m is FleetMember => m !== null && m.replica === replica).map((m) => m.workerId);
  }

  member(slot: number): FleetMember | null {
    return this.members[slot] ?? null;
  }

  private spawn(slot: number, replica: number): FleetMember {
    const workerId = `w${slot}.${this.generation++}`;
    const spec: WorkerChildSpec = {
      address: this.addressOf(replica),
      databaseUrl: this.cfg.databaseUrl,
      queue: this.cfg.queue,
      workerId,
      concurrency: this.cfg.concurrency,
      leaseDurationMs: this.cfg.leaseDurationMs,
      maxWorkMs: this.cfg.maxWorkMs,
    };
    const proc = fork(CHILD, [], { env: cleanEnv({ CHAOS_WORKER: JSON.stringify(spec) }), stdio: ["ignore", "pipe", "pipe", "ipc"] });
    const write = (b: Buffer) => this.log.writable && this.log.write(b);
    proc.stdout!.on("data", write);
    proc.stderr!.on("data", write);
    const ready = new Promise<void>((resolve, reject) => {
      proc.on("message", (m: { type?: string }) => m.type === "ready" && resolve());
      proc.once("exit", (code, sig) => reject(new Error(`chaos worker ${workerId} exited (${sig ?? code}) before connecting`)));
    });
    ready.catch(() => {});
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    const ids = this.idsByReplica.get(replica) ?? [];
    ids.push(workerId);
    this.idsByReplica.set(replica, ids);
    return { slot, workerId, replica, proc, ready, exited };
  }

  /**
   * SIGKILLs the worker in `slot` and waits for it to die; returns its id so
   * the caller can find the jobs it held. A replacement starts at once
   * unless `respawn` is false.
   */
  async kill(slot: number, respawn = true): Promise<string | null> {
    const m = this.members[slot];
    if (!m) return null;
    this.members[slot] = null;
    m.proc.kill("SIGKILL");
    await withTimeout(m.exited, KILL_TIMEOUT_MS, `chaos worker ${m.workerId} exit after SIGKILL`);
    this.kills++;
    if (respawn) this.members[slot] = this.spawn(slot, m.replica);
    return m.workerId;
  }

  /** Fills every empty slot and waits until every worker is connected. */
  async heal(): Promise<void> {
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i];
      if (!m || m.proc.exitCode !== null || m.proc.signalCode !== null) {
        const replica = m?.replica ?? this.replicaOfSlot(i);
        this.members[i] = this.spawn(i, replica);
      }
    }
    await this.allReady();
  }

  private replicaOfSlot(slot: number): number {
    for (const [r, ids] of this.idsByReplica) if (ids.some((id) => id.startsWith(`w${slot}.`))) return r;
    return 0;
  }

  /** SIGTERM to all (the worker drains), SIGKILL to any that take too long. */
  async stop(): Promise<void> {
    const live = this.members.filter((m): m is FleetMember => m !== null);
    for (const m of live) m.proc.kill("SIGTERM");
    await withTimeout(Promise.all(live.map((m) => m.exited)), STOP_TIMEOUT_MS, "chaos workers stopped").catch(async () => {
      for (const m of live) m.proc.kill("SIGKILL");
      await withTimeout(Promise.all(live.map((m) => m.exited)), KILL_TIMEOUT_MS, "chaos workers killed").catch(() => {});
    });
    this.members.length = 0;
    this.log.end();
  }
}
