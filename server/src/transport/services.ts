import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type AdminService,
  GetQueueStatsResponseSchema,
  ListJobsResponseSchema,
  DeleteScheduleResponseSchema,
  ListSchedulesResponseSchema,
  ReplayResponseSchema,
  SetQueueConfigResponseSchema,
  GetQueueConfigResponseSchema,
  GetQueueHistoryResponseSchema,
  ListWorkersResponseSchema,
  WhoAmIResponseSchema,
  PauseQueueResponseSchema,
  ResumeQueueResponseSchema,
  SetScheduleResponseSchema,
  type ScheduleSchema,
} from "@jobwire/proto/jobwire/v1/admin_service_pb";
import {
  CancelJobResponseSchema,
  EnqueueResponseSchema,
  GetJobResponseSchema,
  type JobService,
} from "@jobwire/proto/jobwire/v1/job_service_pb";
import {
  AckResponseSchema,
  HeartbeatResponseSchema,
  type LeaseAckResultSchema,
  LeaseResponseSchema,
  NackResponseSchema,
  type WorkerService,
  type LeaseRequest,
  type LeaseResponse,
} from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { Access } from "../broker/access.js";
import type { Broker } from "../broker/broker.js";
import type { LeaseSession } from "../broker/dispatcher.js";
import { invalid } from "../errors.js";
import type { Logger } from "../log.js";
import type { Lease } from "../model.js";
import type { Schedule } from "../model.js";
import {
  approxJobBytes,
  dateOf,
  durationMs,
  jobToPb,
  msToDuration,
  queueChangeFromPb,
  queueConfigToPb,
  retryToPb,
  specFromPb,
  stateFromPb,
  stateToPb,
  ts,
} from "./convert.js";
import type { Authenticator } from "./auth.js";
import { ACCESS, PEER } from "./context.js";
import { toConnectError } from "./errors.js";
import { leaseResponse } from "./lease-batch.js";

/**
 * The RPC handlers: protobuf in, broker call, protobuf out. Every error
 * leaves through toConnectError.
 */

type Unary<I, O> = (req: I, ctx: HandlerContext) => Promise<O>;

/** The caller's access, set by the HTTP layer (server.ts) after authentication. */
function access(ctx: HandlerContext): Access {
  return ctx.values.get(ACCESS);
}

function guard<I, O>(log: Logger, fn: Unary<I, O>): Unary<I, O> {
  return async (req, ctx) => {
    try {
      return await fn(req, ctx);
    } catch (err) {
      throw toConnectError(err, log, ctx.method.name);
    }
  };
}

export function jobService(broker: Broker, log: Logger): ServiceImpl<typeof JobService> {
  return {
    enqueue: guard(log, async (req, ctx) => {
      const results = await broker.enqueue(req.jobs.map(specFromPb), access(ctx));
      return create(EnqueueResponseSchema, { results: results.map((r) => ({ jobId: r.jobId, duplicate: r.duplicate })) });
    }),
    getJob: guard(log, async (req, ctx) => create(GetJobResponseSchema, { job: jobToPb(await broker.getJob(req.id, access(ctx))) })),
    cancelJob: guard(log, async (req, ctx) => create(CancelJobResponseSchema, { job: jobToPb(await broker.cancelJob(req.id, access(ctx))) })),
  };
}

/**
 * Wraps the work of one ack sent on a Lease stream, as an interceptor wraps
 * a unary call (telemetry/tracing.ts gives it a span linked to the jobs'
 * traces). The identity when tracing is off.
 */
export type StreamAckWrapper = <T>(tokens: readonly string[], run: () => Promise<T>) => Promise<T>;
const unwrapped: StreamAckWrapper = (_tokens, run) => run();

export function workerService(broker: Broker, log: Logger, maxMessageBytes: number, wrapAck: StreamAckWrapper = unwrapped): ServiceImpl<typeof WorkerService> {
  return {
    lease: (requests, ctx) => leaseStream(broker, log, maxMessageBytes, wrapAck, requests, ctx),
    ack: guard(log, async (req) => create(AckResponseSchema, { lostLeaseTokens: await broker.ack(req.leaseTokens) })),
    nack: guard(log, async (req) => {
      const r = await broker.nack(req.leaseToken, req.error, req.permanent, durationMs(req.retryAfter));
      return create(NackResponseSchema, { state: stateToPb(r.state), runAt: r.state === "retryable" || r.state === "available" ? ts(r.runAt) : undefined });
    }),
    heartbeat: guard(log, async (req) => {
      const results = await broker.heartbeat(req.leaseTokens, durationMs(req.extendBy));
      return create(HeartbeatResponseSchema, {
        results: results.map((r) => ({
          leaseToken: r.token,
          lost: r.lost,
          cancelRequested: r.cancelRequested,
          leaseExpiresAt: ts(r.expiresAt),
        })),
      });
    }),
  };
}

/**
 * Lease: the first message opens the session; later ones add credit, or ack
 * jobs (LeaseAck, answered by a LeaseAckResult in a later response). A
 * request stream closed by the worker means "no more jobs": the session
 * ends, acks still in flight are answered, and the response stream
 * finishes cleanly.
 */
async function* leaseStream(
  broker: Broker,
  log: Logger,
  maxMessageBytes: number,
  wrapAck: StreamAckWrapper,
  requests: AsyncIterable<LeaseRequest>,
  ctx: HandlerContext,
): AsyncGenerator<LeaseResponse> {
  const it = requests[Symbol.asyncIterator]();
  let session: LeaseSession;
  try {
    const first = await it.next();
    if (first.done) return;
    if (first.value.msg.case !== "open") throw invalid("open", "the first Lease message must be open");
    const o = first.value.msg.value;
    session = broker.openLease(
      {
        queues: o.queues,
        workerId: o.workerId,
        maxInFlight: o.maxInFlight,
        leaseMs: durationMs(o.leaseDuration),
        peer: ctx.values.get(PEER),
      },
      access(ctx),
    );
  } catch (err) {
    throw toConnectError(err, log, "Lease");
  }
  // Workers ack on this stream only where the broker says it may.
  ctx.responseHeader.set(LEASE_ACKS_HEADER, "1");
  const s = session;
  const acks = new AckReplies();
  let inputError: unknown = null;
  const onAbort = () => void s.close(null);
  ctx.signal.addEventListener("abort", onAbort);
  // Read credit and acks in the background while the generator writes jobs.
  void (async () => {
    try {
      for (;;) {
        const r = await it.next();
        if (r.done) break;
        const m = r.value.msg;
        if (m.case === "credit") {
          if (m.value.count < 1) throw invalid("credit.count", "must be at least 1");
          s.addCredit(m.value.count);
        } else if (m.case === "ack") {
          const { ackId, leaseTokens } = m.value;
          // Acks of every stream share the broker's coalesced statements, as unary Acks do.
          acks.track(
            wrapAck(leaseTokens, () => broker.ack(leaseTokens)).then(
              (lost) => ({ ackId, lostLeaseTokens: lost }),
              (err: unknown) => {
                const ce = toConnectError(err, log, "Lease ack");
                return { ackId, errorCode: ce.code as number, errorMessage: ce.rawMessage };
              },
            ),
          );
        } else {
          throw invalid("open", "the stream is already open; send credit or ack");
        }
      }
    } catch (err) {
      inputError = err;
    }
    await s.close(null);
  })();
  try {
    // Several jobs per message, but never more than the message limit.
    const budget = Math.floor(maxMessageBytes * 0.9);
    const batches = s[Symbol.asyncIterator]();
    // One pending read of the session at a time (it is never read ahead);
    // its result, or an ack's answer, wakes the loop.
    let got: IteratorResult<Lease[]> | null = null;
    const read = () =>
      void batches.next().then((r) => {
        got = r;
        acks.notify();
      }, (err: unknown) => {
        got = { done: true, value: undefined };
        inputError ??= err;
        acks.notify();
      });
    read();
    for (;;) {
      const replies = acks.take();
      if (replies.length > 0) {
        yield create(LeaseResponseSchema, { acks: replies });
        continue;
      }
      const r = got as IteratorResult<Lease[]> | null; // set by read(), out of the compiler's sight
      if (r === null) {
        await acks.wait();
        continue;
      }
      if (r.done) break;
      got = null;
      read();
      const batch = r.value;
      if (batch.length === 0) {
        yield create(LeaseResponseSchema, { jobs: [] });
        continue;
      }
      let part: Lease[] = [];
      let bytes = 0;
      for (const l of batch) {
        const n = approxJobBytes(l.job);
        if (part.length > 0 && bytes + n > budget) {
          yield leaseResponse(part); // generated codec: lease-batch.ts
          part = [];
          bytes = 0;
        }
        part.push(l);
        bytes += n;
      }
      if (part.length > 0) yield leaseResponse(part); // generated codec: lease-batch.ts
    }
    // The session ended: answer the acks still in flight before the stream does.
    for (;;) {
      const replies = acks.take();
      if (replies.length > 0) yield create(LeaseResponseSchema, { acks: replies });
      else if (acks.inFlight === 0) break;
      else await acks.wait();
    }
    if (inputError) throw inputError;
  } catch (err) {
    throw toConnectError(err, log, "Lease");
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    await s.close(null);
  }
}


function scheduleToPb(s: Schedule): MessageInitShape<typeof ScheduleSchema> {
  const t = s.template;
  return {
    name: s.name,
    cron: s.cron,
    paused: s.paused,
    nextRunAt: ts(s.nextRunAt),
    lastRunAt: ts(s.lastRunAt),
    lastJobId: s.lastJobId ?? "",
    job: {
      queue: t.queue,
      type: t.type,
      payload: t.payload,
      contentType: t.contentType,
      priority: t.priority,
      maxAttempts: t.maxAttempts ?? undefined,
      leaseDuration: t.leaseMs === null ? undefined : msToDuration(t.leaseMs),
      retry: t.retry ? retryToPb(t.retry) : undefined,
      headers: t.headers,
    },
  };
}

export function adminService(broker: Broker, log: Logger, auth: Authenticator): ServiceImpl<typeof AdminService> {
  return {
    replay: guard(log, async (req, ctx) => {
      const f = req.filter;
      const ids = await broker.replay({
        jobIds: req.jobIds,
        filter: f
          ? {
              queue: f.queue,
              type: f.type || null,
              errorContains: f.errorContains || null,
              finishedAfter: dateOf("filter.finished_after", f.finishedAfter),
              finishedBefore: dateOf("filter.finished_before", f.finishedBefore),
            }
          : null,
        limit: req.limit,
        dryRun: req.dryRun,
        includeCancelled: req.includeCancelled,
      }, access(ctx));
      return create(ReplayResponseSchema, { replayed: ids.length, jobIds: ids });
    }),
    listJobs: guard(log, async (req, ctx) => {
      const page = await broker.listJobs({
        queue: req.queue,
        type: req.type,
        errorContains: req.errorContains,
        states: req.states.map((s, i) => stateFromPb(`states[${i}]`, s)),
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      }, access(ctx));
      return create(ListJobsResponseSchema, { jobs: page.jobs.map(jobToPb), nextPageToken: page.nextPageToken, sizeLimited: page.sizeLimited });
    }),
    getQueueStats: guard(log, async (req, ctx) => {
      const stats = await broker.queueStats(req.queues, access(ctx));
      return create(GetQueueStatsResponseSchema, {
        queues: stats.map((s) => ({
          queue: s.queue,
          scheduled: BigInt(s.counts.scheduled),
          available: BigInt(s.counts.available),
          running: BigInt(s.counts.running),
          retryable: BigInt(s.counts.retryable),
          completed: BigInt(s.counts.completed),
          dead: BigInt(s.counts.dead),
          cancelled: BigInt(s.counts.cancelled),
          oldestAvailableAge: msToDuration(s.oldestAvailableAgeMs),
          paused: s.paused,
        })),
      });
    }),
    setSchedule: guard(log, async (req, ctx) => {
      const s = req.schedule;
      if (!s) throw invalid("schedule", "is required");
      const saved = await broker.setSchedule({ name: s.name, cron: s.cron, job: s.job ? specFromPb(s.job, 0) : null, paused: s.paused }, access(ctx));
      return create(SetScheduleResponseSchema, { schedule: scheduleToPb(saved) });
    }),
    deleteSchedule: guard(log, async (req, ctx) => {
      await broker.deleteSchedule(req.name, access(ctx));
      return create(DeleteScheduleResponseSchema, {});
    }),
    listSchedules: guard(log, async (_req, ctx) => create(ListSchedulesResponseSchema, { schedules: (await broker.listSchedules(access(ctx))).map(scheduleToPb) })),
    setQueueConfig: guard(log, async (req, ctx) =>
      create(SetQueueConfigResponseSchema, { config: queueConfigToPb(await broker.setQueueConfig(queueChangeFromPb(req), access(ctx))) }),
    ),
    getQueueConfig: guard(log, async (req, ctx) =>
      create(GetQueueConfigResponseSchema, { config: queueConfigToPb(await broker.getQueueConfig(req.queue, access(ctx))) }),
    ),
    pauseQueue: guard(log, async (req, ctx) => create(PauseQueueResponseSchema, { config: queueConfigToPb(await broker.pauseQueue(req.queue, access(ctx))) })),
    resumeQueue: guard(log, async (req, ctx) => create(ResumeQueueResponseSchema, { config: queueConfigToPb(await broker.resumeQueue(req.queue, access(ctx))) })),
    whoAmI: guard(log, async (_req, ctx) => {
      const a = access(ctx);
      return create(WhoAmIResponseSchema, { authEnabled: auth.enabled, name: auth.enabled ? a.name : "", scopes: [...a.scopes], queues: [...a.queues] });
    }),
    listWorkers: guard(log, async (req, ctx) =>
      create(ListWorkersResponseSchema, {
        workers: (await broker.listWorkers(req.queue, access(ctx))).map((w) => ({
          workerId: w.workerId,
          queues: w.queues,
          maxInFlight: w.maxInFlight,
          credit: w.credit,
          jobsHeld: w.held,
          connectedAt: ts(w.connectedAt),
          brokerId: w.brokerId,
          peer: w.peer,
        })),
      }),
    ),
    getQueueHistory: guard(log, async (req, ctx) => {
      const h = broker.queueHistory(req.queue, access(ctx));
      return create(GetQueueHistoryResponseSchema, {
        samples: h.samples.map((s) => ({
          at: ts(s.at),
          queue: s.queue,
          available: BigInt(s.available),
          waiting: BigInt(s.waiting),
          running: BigInt(s.running),
          dead: BigInt(s.dead),
          enqueued: BigInt(s.enqueued),
          completed: BigInt(s.completed),
          failed: BigInt(s.failed),
        })),
        interval: msToDuration(h.intervalMs),
      });
    }),
  };
}

/** The response header that tells a worker it may ack on the Lease stream. */
export const LEASE_ACKS_HEADER = "jobwire-lease-acks";

type AckReply = MessageInitShape<typeof LeaseAckResultSchema>;

/**
 * Answers to a stream's acks, in the order they finish, for the response
 * loop to send; and the loop's one wake-up, which the session's next batch
 * uses too.
 */
class AckReplies {
  private done: AckReply[] = [];
  private wake: (() => void) | null = null;
  private woken = false;
  inFlight = 0;

  track(p: Promise<AckReply>): void {
    this.inFlight++;
    void p.then((reply) => {
      this.inFlight--;
      this.done.push(reply);
      this.notify();
    });
  }

  take(): AckReply[] {
    if (this.done.length === 0) return this.done;
    const out = this.done;
    this.done = [];
    return out;
  }

  notify(): void {
    this.woken = true;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Resolves at the next notify(), or at once if one came since the last wait. */
  wait(): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.wake = () => {
        this.woken = false;
        resolve();
      };
    });
  }
}
