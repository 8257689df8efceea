import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { LeaseAckResult, LeasedJob, LeaseRequest, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";

/** An async queue: push() from one side, next() awaits on the other. */
export class Channel<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiters: ((r: IteratorResult<T>) => void)[] = [];
  private closed = false;

  push(item: T): void {
    const w = this.waiters.shift();
    if (w) w({ value: item, done: false });
    else this.items.push(item);
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  private next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // A generator, so the iterator has return() and throw(), which connect-es calls.
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      const r = await this.next();
      if (r.done) return;
      yield r.value;
    }
  }
}

export interface OpenOptions {
  queues: string[];
  maxInFlight?: number;
  workerId?: string;
  leaseMs?: number;
}

/**
 * A raw Lease stream for tests: no worker runtime in between, so a test
 * sees exactly what the broker sends.
 */
export class TestLeaseStream {
  private readonly requests = new Channel<LeaseRequest>();
  private readonly jobs: LeasedJob[] = [];
  /** Answers to acks sent on the stream, by ack_id. */
  readonly ackResults = new Map<bigint, LeaseAckResult>();
  /** The response headers, once they arrive. */
  header: Headers | undefined;
  private waiters: (() => void)[] = [];
  /** Messages received, keepalives included. */
  messages = 0;
  /** Set when the response stream ends: null for a clean end, else the error. */
  ended: Promise<unknown>;
  private abort = new AbortController();

  constructor(client: Client<typeof WorkerService>, o: OpenOptions) {
    this.requests.push(
      create(LeaseRequestSchema, {
        msg: {
          case: "open",
          value: {
            queues: o.queues,
            maxInFlight: o.maxInFlight ?? 10,
            workerId: o.workerId ?? "test-worker",
            leaseDuration: o.leaseMs === undefined ? undefined : { seconds: BigInt(Math.floor(o.leaseMs / 1000)), nanos: (o.leaseMs % 1000) * 1e6 },
          },
        },
      }),
    );
    const responses = client.lease(this.requests, { signal: this.abort.signal, onHeader: (h) => (this.header = h) });
    this.ended = (async () => {
      try {
        for await (const r of responses) {
          this.messages++;
          this.jobs.push(...r.jobs);
          for (const a of r.acks) this.ackResults.set(a.ackId, a);
          for (const w of this.waiters.splice(0)) w();
        }
        return null;
      } catch (err) {
        return err;
      } finally {
        this.requests.close();
        for (const w of this.waiters.splice(0)) w();
      }
    })();
  }

  credit(count: number): void {
    this.requests.push(create(LeaseRequestSchema, { msg: { case: "credit", value: { count } } }));
  }

  /** Acks on the stream (LeaseAck); the answer arrives in ackResults. */
  ack(ackId: bigint, leaseTokens: string[]): void {
    this.requests.push(create(LeaseRequestSchema, { msg: { case: "ack", value: { ackId, leaseTokens } } }));
  }

  /** Waits for the answer to the stream ack `ackId`. */
  async ackResult(ackId: bigint, timeoutMs = 10_000): Promise<LeaseAckResult> {
    const deadline = Date.now() + timeoutMs;
    let done = false;
    void this.ended.then(() => (done = true));
    for (;;) {
      const r = this.ackResults.get(ackId);
      if (r) return r;
      if (done) throw new Error(`stream ended before ack ${ackId} was answered`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for the answer to ack ${ackId}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
  }

  /** Waits until `n` jobs have arrived (or the stream ends) and takes them. */
  async take(n: number, timeoutMs = 10_000): Promise<LeasedJob[]> {
    const deadline = Date.now() + timeoutMs;
    let done = false;
    void this.ended.then(() => (done = true));
    while (this.jobs.length < n) {
      if (done) throw new Error(`stream ended after ${this.jobs.length} of ${n} jobs`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} jobs; have ${this.jobs.length}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
    return this.jobs.splice(0, n);
  }

  /** Jobs received and not yet taken. */
  get pending(): number {
    return this.jobs.length;
  }

  /** Half-close: tells the broker this worker wants no more jobs. */
  finish(): void {
    this.requests.close();
  }

  /** Drops the connection as a crashed worker would. */
  kill(): void {
    this.abort.abort();
  }
}

/** Polls `check` until it returns a value other than undefined, or fails after timeoutMs. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}
