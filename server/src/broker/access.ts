import { BrokerError } from "../errors.js";

/**
 * What a caller may do: the scopes of its token (or client certificate),
 * and the queues it may touch. The transport authenticates the caller and
 * checks the scope an RPC needs before reading its body
 * (transport/auth.ts); the broker checks queues, which it knows only from
 * the request or from the jobs themselves.
 *
 *   enqueue   Enqueue, and GetJob
 *   work      Lease, Ack, Nack, Heartbeat
 *   read      GetJob, ListJobs, GetQueueStats, ListSchedules, GetQueueConfig, ListWorkers, GetQueueHistory
 *   admin     Replay, CancelJob, SetQueueConfig, SetSchedule, DeleteSchedule, PauseQueue, ResumeQueue
 */
export type Scope = "enqueue" | "work" | "read" | "admin";
export const SCOPES: readonly Scope[] = ["enqueue", "work", "read", "admin"];

export class Access {
  private readonly patterns: RegExp[];
  /** True when no pattern limits the queues ("*"). */
  readonly allQueues: boolean;

  constructor(
    /** The token's or certificate's name (never its secret). */
    readonly name: string,
    readonly scopes: ReadonlySet<Scope>,
    /** Glob patterns: * matches any run of characters. */
    readonly queues: readonly string[],
    /** What the name names, for messages: "token ci lacks scope admin". */
    readonly kind: "token" | "certificate" | "caller" = "token",
  ) {
    this.allQueues = queues.includes("*");
    this.patterns = queues.map(globToRegExp);
  }

  /** "token ci", "certificate worker-fleet": the caller as refusals name it. */
  get label(): string {
    return `${this.kind} ${this.name}`;
  }

  has(scope: Scope): boolean {
    return this.scopes.has(scope);
  }

  allows(queue: string): boolean {
    return this.allQueues || this.patterns.some((p) => p.test(queue));
  }

  /** PERMISSION_DENIED naming the queue and the caller's patterns, unless the queue is allowed. */
  requireQueue(queue: string, field: string): void {
    if (!this.allows(queue)) {
      throw new BrokerError(
        "permission_denied",
        `${field}: ${this.label} may not touch queue ${queue} (its queues: ${this.queues.join(", ")})`,
        field,
      );
    }
  }

  /** For calls that list across queues: a limited caller must name its queue. */
  requireNamedQueue(queue: string, field: string): void {
    if (queue === "" && !this.allQueues) {
      throw new BrokerError(
        "permission_denied",
        `${field}: ${this.label} may touch only queues ${this.queues.join(", ")}; name one`,
        field,
      );
    }
    if (queue !== "") this.requireQueue(queue, field);
  }
}

/** Everything: a broker without authentication. */
export const FULL_ACCESS = new Access("anonymous", new Set(SCOPES), ["*"], "caller");

/** Nothing: the default when no caller was authenticated (the transport always sets one). */
export const NO_ACCESS = new Access("nobody", new Set(), [], "caller");

function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
}
