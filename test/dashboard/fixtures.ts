import { create } from "@bufbuild/protobuf";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { TestLeaseStream, type TestBroker } from "@jobwire/server/testing";

let n = 0;
/** A queue name no other test uses. */
export function uniqueQueue(prefix = "dash"): string {
  return `${prefix}-${process.pid}-${n++}`;
}

export const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
export const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

/**
 * A job that died the real way: enqueued over gRPC, leased on a Lease
 * stream, and nacked as permanent, so its row and error history are what
 * the broker itself writes. Call it before anything else is enqueued on
 * the queue, so that the stream leases this job.
 */
export async function deadJob(tb: TestBroker, queue: string, error: string, opts: { type?: string; payload?: unknown; headers?: Record<string, string> } = {}): Promise<string> {
  const res = await tb.jobs.enqueue({
    jobs: [
      create(JobSpecSchema, {
        queue,
        type: opts.type ?? "send-email",
        payload: new TextEncoder().encode(JSON.stringify(opts.payload ?? { to: "a@example.com" })),
        headers: opts.headers ?? {},
        maxAttempts: 3,
      }),
    ],
  });
  const id = res.results[0]!.jobId;
  const s = new TestLeaseStream(tb.workers, { queues: [queue], workerId: "fixture-worker" });
  try {
    const [l] = await s.take(1);
    if (l!.job?.id !== id) throw new Error(`deadJob needs a queue of its own: leased job ${l!.job?.id}, not ${id}`);
    await tb.workers.nack({ leaseToken: l!.leaseToken, error, permanent: true });
  } finally {
    s.kill();
  }
  return id;
}

export async function stateOf(tb: TestBroker, id: string): Promise<string> {
  const { rows } = await tb.db.query<{ state: string }>("SELECT state::text FROM jobwire.jobs WHERE id = $1", [id]);
  return rows[0]?.state ?? "missing";
}
