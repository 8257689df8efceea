import type { BrokerHooks } from "../broker/broker.js";
import type { JobStore } from "../store/jobs.js";

/**
 * Prometheus metrics at GET /metrics, in the text exposition format.
 *
 * Counters move with the broker's own work (this replica's). Gauges are
 * read from Postgres at scrape time, so every replica reports the same
 * backlog; they touch only the partial indexes of the waiting, running and
 * dead states, never the completed history, so a scrape stays cheap as the
 * table grows.
 */
type Labels = Record<string, string>;

class Counter {
  private readonly values = new Map<string, { labels: Labels; n: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, n = 1): void {
    const key = JSON.stringify(labels);
    const v = this.values.get(key);
    if (v) v.n += n;
    else this.values.set(key, { labels, n });
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, n } of this.values.values()) lines.push(`${this.name}${fmt(labels)} ${n}`);
    return lines.join("\n");
  }
}

function fmt(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function gauge(name: string, help: string, samples: { labels: Labels; value: number }[]): string {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, ...samples.map((s) => `${name}${fmt(s.labels)} ${s.value}`)].join("\n");
}

export class Metrics {
  readonly enqueued = new Counter("jobwire_jobs_enqueued_total", "Jobs created by Enqueue on this replica.");
  readonly duplicates = new Counter("jobwire_jobs_duplicate_total", "Enqueued jobs skipped because their idempotency key was live.");
  readonly leased = new Counter("jobwire_jobs_leased_total", "Leases handed to workers by this replica.");
  readonly acked = new Counter("jobwire_jobs_acked_total", "Jobs completed by Ack on this replica.");
  readonly lostAcks = new Counter("jobwire_acks_lost_total", "Ack tokens refused because their lease was lost.");
  readonly failed = new Counter("jobwire_jobs_failed_total", "Failed attempts, by what happened next (retry, dead, cancelled) and why (nack, lease_expired).");
  readonly replayed = new Counter("jobwire_jobs_replayed_total", "Jobs revived by Replay.");
  readonly pruned = new Counter("jobwire_jobs_pruned_total", "Completed jobs deleted by this replica's pruner after their retention.");

  constructor(
    private readonly store: JobStore,
    private readonly openStreams: () => number,
  ) {}

  hooks(): BrokerHooks {
    return {
      enqueued: (queues, duplicates) => {
        for (const [queue, n] of count(queues)) this.enqueued.inc({ queue }, n);
        if (duplicates) this.duplicates.inc({}, duplicates);
      },
      leased: (leases) => {
        for (const [queue, n] of count(leases.map((l) => l.job.queue))) this.leased.inc({ queue }, n);
      },
      acked: (perQueue) => {
        for (const [queue, n] of perQueue) this.acked.inc({ queue }, n);
      },
      lostAcks: (n) => this.lostAcks.inc({}, n),
      failed: (jobs, cause) => {
        for (const j of jobs) this.failed.inc({ queue: j.queue, outcome: j.state === "available" || j.state === "retryable" ? "retry" : j.state, cause });
      },
      replayed: (jobs) => {
        for (const [queue, n] of count(jobs.map((j) => j.queue))) this.replayed.inc({ queue }, n);
      },
      pruned: (n) => this.pruned.inc({}, n),
    };
  }

  async render(): Promise<string> {
    const snap = await this.store.metricsSnapshot();
    return (
      [
        gauge("jobwire_queue_jobs", "Jobs per queue and state (waiting, running and dead; completed jobs are counted by jobwire_jobs_acked_total).", snap.counts.map((c) => ({ labels: { queue: c.queue, state: c.state }, value: c.n }))),
        gauge("jobwire_queue_oldest_available_seconds", "How long the oldest available job has been due.", snap.oldest.map((o) => ({ labels: { queue: o.queue }, value: o.seconds }))),
        gauge("jobwire_lease_streams", "Open Lease streams on this replica.", [{ labels: {}, value: this.openStreams() }]),
        this.enqueued.render(),
        this.duplicates.render(),
        this.leased.render(),
        this.acked.render(),
        this.lostAcks.render(),
        this.failed.render(),
        this.replayed.render(),
        this.pruned.render(),
      ].join("\n") + "\n"
    );
  }
}

function count(items: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return m;
}
