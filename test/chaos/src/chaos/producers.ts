/**
 * Producers: enqueue loops in the harness process, one per broker replica
 * (their home), at a fixed total rate. Every logical job has an idempotency
 * key, so a retry after an error whose outcome is unknown (the broker may
 * have committed before it died) cannot create a second job: the retry
 * answers with the same id. A producer whose home replica fails moves to
 * the next replica for that job's next try.
 *
 * The ledger is the history the checker reads: a job is acknowledged once
 * some broker answered its Enqueue with an id. A job whose every try failed
 * until its deadline is indeterminate: it may or may not exist.
 */
import { JobwireClient, JobwireError } from "@jobwire/client";
import { sleep, withTimeout } from "../common/util.js";

export interface LedgerEntry {
  key: string;
  id: string;
  ackedAt: number;
}

export class Ledger {
  readonly acked = new Map<string, LedgerEntry>();
  readonly indeterminate = new Map<string, string>();
  /** Error codes the producers saw, by name ("UNAVAILABLE": 12). */
  readonly errors = new Map<string, number>();

  ack(key: string, id: string): void {
    if (!this.acked.has(key)) this.acked.set(key, { key, id, ackedAt: Date.now() });
  }

  error(err: unknown): void {
    const name = err instanceof JobwireError ? err.codeName : err instanceof Error ? err.name : "unknown";
    this.errors.set(name, (this.errors.get(name) ?? 0) + 1);
  }

  /** Codes other than UNAVAILABLE and DEADLINE_EXCEEDED: during a fault, clients should only ever be told to retry. */
  unexpectedErrors(): string[] {
    return [...this.errors.entries()].filter(([k]) => k !== "UNAVAILABLE" && k !== "DEADLINE_EXCEEDED").map(([k, v]) => `${k} ×${v}`);
  }

  errorSummary(): string {
    return this.errors.size === 0 ? "none" : [...this.errors.entries()].map(([k, v]) => `${k} ×${v}`).join(", ");
  }
}

export interface ProducerConfig {
  queue: string;
  /** Total jobs per second over all producers. */
  rate: number;
  /** Most enqueues in flight per producer (when reached, the rate drops). */
  maxInFlight: number;
  /** How long one logical job keeps being retried before it is indeterminate. */
  jobDeadlineMs: number;
  runId: string;
}

/** Each try's deadline; the client retries UNAVAILABLE inside it. */
const TRY_TIMEOUT_MS = 3_000;
const TICK_MS = 20;

export class Producers {
  private readonly clients: JobwireClient[];
  private running = false;
  private seq = 0;
  private readonly inFlight: Set<Promise<void>>[];
  private loops: Promise<void>[] = [];
  /** Jobs not started because a producer had maxInFlight enqueues pending. */
  skipped = 0;

  constructor(
    addresses: string[],
    private readonly cfg: ProducerConfig,
    readonly ledger: Ledger,
  ) {
    this.clients = addresses.map((address) => new JobwireClient({ address, timeoutMs: TRY_TIMEOUT_MS }));
    this.inFlight = addresses.map(() => new Set());
  }

  start(): void {
    this.running = true;
    this.loops = this.clients.map((_, home) => this.loop(home));
  }

  private async loop(home: number): Promise<void> {
    const perTick = (this.cfg.rate / this.clients.length) * (TICK_MS / 1000);
    let owed = 0;
    let next = Date.now();
    while (this.running) {
      owed += perTick;
      while (owed >= 1) {
        owed -= 1;
        if (this.inFlight[home]!.size >= this.cfg.maxInFlight) {
          this.skipped++;
          continue;
        }
        const p = this.produce(home, `${this.cfg.runId}:${this.seq++}`);
        this.inFlight[home]!.add(p);
        void p.finally(() => this.inFlight[home]!.delete(p));
      }
      next += TICK_MS;
      await sleep(Math.max(0, next - Date.now()));
    }
  }

  /** Enqueues one logical job until some broker acknowledges it or its deadline passes. */
  async produce(home: number, key: string): Promise<void> {
    const deadline = Date.now() + this.cfg.jobDeadlineMs;
    let lastError = "";
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      const client = this.clients[(home + attempt) % this.clients.length]!;
      try {
        const r = await client.enqueue("chaos", { key }, { queue: this.cfg.queue, idempotencyKey: key, timeoutMs: TRY_TIMEOUT_MS });
        this.ledger.ack(key, r.id);
        return;
      } catch (err) {
        this.ledger.error(err);
        lastError = err instanceof Error ? err.message : String(err);
        await sleep(Math.min(1000, 50 * 2 ** Math.min(attempt, 5)));
      }
    }
    this.ledger.indeterminate.set(key, lastError);
  }

  /** Stops starting jobs and waits (bounded by the job deadline) for those in flight. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    const pending = this.inFlight.flatMap((s) => [...s]);
    await withTimeout(Promise.all(pending), this.cfg.jobDeadlineMs + 5_000, "producers finished").catch(() => {});
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
