/**
 * Runs fuzz cases on a few lanes at once (the broker coalesces concurrent
 * Enqueues and Acks, and some failures only show under concurrency), stops
 * at a case count or a deadline, whichever comes first, and keeps every
 * outcome: a histogram of codes, the failing ones grouped into distinct
 * failures, the anomalies that are not targets, and broker crashes with the
 * cases that were in flight.
 */
import type { Broker } from "../common/broker.js";
import { sleep } from "../common/util.js";
import { buildCase, type FuzzCase } from "./cases.js";
import type { Outcome, Transport } from "./transport.js";
import type { Pools } from "./values.js";
import { FAILING_CODES } from "./wire.js";

export interface Example {
  index: number;
  rpc: string;
  protocol: string;
  family: string;
  description: string;
  outcome: Outcome;
}

export interface Group {
  /** rpc, protocol, code and normalised message, joined by KEY_SEP */
  key: string;
  count: number;
  families: Set<string>;
  first: Example;
  /** Filled in by the replay: what the first example answers when sent alone. */
  alone?: Outcome;
}

export interface Crash {
  at: number;
  inFlight: FuzzCase[];
  exit: string;
  stderr: string[];
  /** Cases in flight that, sent again alone, crashed the broker by themselves (null: not tried). */
  culprits: number[] | null;
}

export const KEY_SEP = "\u0001";

export function normalise(message: string): string {
  return message
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, "<uuid>")
    .replace(/\d+/g, "N")
    .slice(0, 140);
}

/**
 * A failure counts against the target: the broker said INTERNAL or UNKNOWN,
 * or a bare HTTP 5xx. Not 503 ("retry"), and not 505, Connect's and
 * gRPC-Web's answer to a bidi stream over HTTP/1.1, which cannot carry one.
 */
export function isFailure(o: Outcome): boolean {
  return FAILING_CODES.has(o.code) || (o.via === "http" && o.httpStatus >= 500 && o.httpStatus !== 503 && o.httpStatus !== 505);
}

/** Not a target, but worth reading: no status at all, a reset, a hang on a complete request. */
export function isAnomaly(o: Outcome): boolean {
  return o.via === "none" || o.via === "reset" || o.via === "timeout" || o.via === "connection" || o.code.startsWith("grpc-status ") || o.code.startsWith("connect code ");
}

export class Runner {
  sent = 0;
  readonly codes = new Map<string, number>();
  readonly byProtocol = new Map<string, Map<string, number>>();
  readonly byRpc = new Map<string, { sent: number; failing: number }>();
  readonly failures = new Map<string, Group>();
  /** Anomalies with the time they were seen; those around a crash are the crash's, not their own (see anomalies()). */
  private readonly anomalySeen: { at: number; ex: Example }[] = [];
  readonly crashes: Crash[] = [];
  readonly halfSent = { sent: 0, answered: 0 };
  private readonly inFlight = new Map<number, FuzzCase>();
  private healthy: Promise<void> = Promise.resolve();
  private next = 0;
  stoppedBy: "cases" | "deadline" | null = null;
  /** While crash suspects are re-sent, a crash is theirs and is not counted again. */
  private probing = false;
  private probeCrashes = 0;

  constructor(
    private readonly transport: () => Transport,
    broker: Broker,
    readonly seed: number,
    private readonly pools: Pools,
  ) {
    broker.onCrash = (exit) => {
      if (this.probing) this.probeCrashes++;
      else
        this.crashes.push({
          at: Date.now(),
          inFlight: [...this.inFlight.values()],
          exit: exit.signal ?? `code ${exit.code}`,
          stderr: [...broker.logs.rawTail],
          culprits: null,
        });
      // Later cases wait until the broker is back (same port).
      this.healthy = broker.start().catch(() => {});
    };
  }

  async run(lanes: number, maxCases: number, deadlineAt: number, onProgress?: (sent: number) => void): Promise<void> {
    const lane = async () => {
      for (;;) {
        if (this.next >= maxCases) return void (this.stoppedBy ??= "cases");
        if (Date.now() >= deadlineAt) return void (this.stoppedBy ??= "deadline");
        await this.healthy;
        const index = this.next++;
        const c = buildCase(this.seed, index, this.pools);
        this.inFlight.set(index, c);
        const o = await this.transport().send(c);
        this.inFlight.delete(index);
        this.record(c, o);
        if (this.sent % 500 === 0) onProgress?.(this.sent);
      }
    };
    await Promise.all(Array.from({ length: lanes }, lane));
  }

  record(c: FuzzCase, o: Outcome): void {
    this.sent++;
    this.codes.set(o.code, (this.codes.get(o.code) ?? 0) + 1);
    const p = this.byProtocol.get(c.protocol.name) ?? new Map<string, number>();
    p.set(o.code, (p.get(o.code) ?? 0) + 1);
    this.byProtocol.set(c.protocol.name, p);
    const r = this.byRpc.get(c.rpc.name) ?? { sent: 0, failing: 0 };
    r.sent++;
    this.byRpc.set(c.rpc.name, r);
    if (c.request.halfSend) {
      this.halfSent.sent++;
      if (o.via !== "half-sent") this.halfSent.answered++;
      return; // whatever a half-sent request gets is not held against the broker
    }
    const ex: Example = { index: c.index, rpc: c.rpc.name, protocol: c.protocol.name, family: c.family, description: c.description, outcome: o };
    if (isFailure(o)) {
      r.failing++;
      this.add(this.failures, ex);
    } else if (isAnomaly(o)) this.anomalySeen.push({ at: Date.now(), ex });
  }

  /**
   * The anomalies grouped, leaving out those seen from 2 s before a crash
   * until 15 s after it: connections reset and refused while the broker
   * dies and starts again.
   */
  anomalies(): Map<string, Group> {
    const map = new Map<string, Group>();
    for (const { at, ex } of this.anomalySeen) {
      if (this.crashes.some((c) => at >= c.at - 2_000 && at <= c.at + 15_000)) continue;
      this.add(map, ex);
    }
    return map;
  }

  private add(map: Map<string, Group>, ex: Example): void {
    const key = [ex.rpc, ex.protocol, ex.outcome.code, normalise(ex.outcome.message)].join(KEY_SEP);
    const g = map.get(key) ?? { key, count: 0, families: new Set<string>(), first: ex };
    g.count++;
    g.families.add(ex.family);
    map.set(key, g);
  }

  /** For each crash, sends every case that was in flight again, alone, and notes those that crash the broker by themselves. */
  async findCulprits(deadlineAt: number): Promise<void> {
    for (const crash of this.crashes) {
      crash.culprits = [];
      for (const c of crash.inFlight) {
        if (Date.now() >= deadlineAt) return;
        await this.healthy;
        const before = this.probeCrashes;
        this.probing = true;
        try {
          await this.transport().send(buildCase(this.seed, c.index, this.pools));
          await sleep(500);
        } finally {
          this.probing = false;
        }
        if (this.probeCrashes > before) crash.culprits.push(c.index);
      }
    }
  }

  /** Sends each group's first example again, alone, and keeps what it answers. */
  async replayAlone(groups: Group[], deadlineAt: number): Promise<number> {
    let n = 0;
    for (const g of groups) {
      if (Date.now() >= deadlineAt) break;
      await this.healthy;
      g.alone = await this.transport().send(buildCase(this.seed, g.first.index, this.pools));
      n++;
      await sleep(20);
    }
    return n;
  }
}
