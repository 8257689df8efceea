/**
 * Real ids and lease tokens for the fuzzer's stateful inputs: jobs enqueued
 * before the run and leased over a real Lease stream with a long lease, so
 * that Ack, Nack, Heartbeat, GetJob, CancelJob and Replay see ids and tokens
 * the broker knows, alone and mixed up with one another.
 */
import { create } from "@bufbuild/protobuf";
import { JobwireClient } from "@jobwire/client";
import { type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { withTimeout } from "../common/util.js";
import type { Pools } from "./values.js";

export const REAL_QUEUE = "fz-real";
const JOBS = 60;
const LEASED = 30;
/** Long enough to outlast a run, so the tokens stay current (and these jobs are not "stuck"). */
const LEASE_S = 900n;
const SETUP_TIMEOUT_MS = 20_000;

export async function collectPools(address: string): Promise<Pools> {
  const client = new JobwireClient({ address });
  try {
    const results = await client.enqueueMany(Array.from({ length: JOBS }, (_, i) => ({ type: "fz", payload: { i }, queue: REAL_QUEUE })));
    const jobIds = results.map((r) => r.id);
    const tokens: string[] = [];
    let enough!: () => void;
    const done = new Promise<void>((r) => (enough = r));
    async function* requests(): AsyncGenerator<LeaseRequest> {
      yield create(LeaseRequestSchema, { msg: { case: "open", value: { queues: [REAL_QUEUE], workerId: "fuzz-state", maxInFlight: LEASED, leaseDuration: { seconds: LEASE_S } } } });
      await done;
    }
    const read = (async () => {
      for await (const res of client.workers.lease(requests(), { timeoutMs: SETUP_TIMEOUT_MS })) {
        for (const j of res.jobs) tokens.push(j.leaseToken);
        if (tokens.length >= LEASED) break;
      }
    })();
    await withTimeout(read, SETUP_TIMEOUT_MS, "leasing the fuzzer's real jobs").finally(() => enough());
    return { jobIds, tokens };
  } finally {
    client.close();
  }
}
