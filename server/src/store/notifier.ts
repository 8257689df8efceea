import pg from "pg";
import type { Logger } from "../log.js";

/**
 * One LISTEN connection per broker, on channel "jobwire". Payloads:
 *   "a:<queue>"  jobs became available on <queue>
 *   "s:"         a job was scheduled for later (the scheduler re-plans)
 *
 * NOTIFY is a wake-up hint, never the source of truth: a notification lost
 * while the connection was down is covered by `onResync` on reconnect and by
 * the dispatchers' polling fallback.
 */
export interface NotifierEvents {
  onAvailable(queue: string): void;
  onScheduled(): void;
  /** The connection was (re)established; anything may have been missed. */
  onResync(): void;
}

export class Notifier {
  private client: pg.Client | null = null;
  private stopped = false;
  private retryMs = 100;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly url: string,
    private readonly events: NotifierEvents,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: "jobwire-listen" });
    client.on("notification", (msg) => {
      const p = msg.payload ?? "";
      if (p.startsWith("a:")) this.events.onAvailable(p.slice(2));
      else if (p.startsWith("s:")) this.events.onScheduled();
    });
    client.on("error", (err) => {
      this.log.warn("listen connection failed; reconnecting", { err });
      this.reconnect(client);
    });
    client.on("end", () => this.reconnect(client));
    await client.connect();
    await client.query("LISTEN jobwire");
    this.client = client;
    this.retryMs = 100;
    this.events.onResync();
  }

  private reconnect(dead: pg.Client): void {
    if (this.stopped || this.client !== dead) return;
    this.client = null;
    dead.end().catch(() => {});
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 5000);
    this.timer = setTimeout(() => {
      this.connect().catch((err) => {
        this.log.warn("listen reconnect failed", { err });
        this.client = dead; // so the next failure path schedules again
        this.reconnect(dead);
      });
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => {});
  }
}
