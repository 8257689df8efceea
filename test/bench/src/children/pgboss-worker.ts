/**
 * A pg-boss worker process: one work() loop fetching batchSize jobs per
 * poll (see peers.ts). pg-boss completes a batch when the handler returns,
 * without waiting, so "acked" means the handler returned; the bench
 * confirms completion in the database.
 */
import type PgBoss from "pg-boss";
import { pgBossTuning, startBoss } from "../peers.js";
import { now, type Payload, type WorkerResult, type WorkerSpec } from "../protocol.js";
import { Recorder, runChild } from "./runtime.js";

runChild<WorkerSpec>(async (spec) => {
  const rec = new Recorder(spec.recordStarts);
  const errors: string[] = [];
  let done = 0;
  const boss: PgBoss = await startBoss(spec.endpoint, { role: "worker", errors });
  return {
    progress: () => done,
    go: async () => {
      await boss.work<Payload>(spec.queue, pgBossTuning(), async (jobs) => {
        const t = spec.recordStarts ? now() : 0;
        for (const job of jobs) rec.add(job.data.i, t);
        done += jobs.length;
      });
    },
    stop: async (): Promise<WorkerResult> => {
      await boss.stop({ graceful: true, wait: true, close: true, timeout: 10_000 });
      return { handled: rec.indices(), starts: rec.times(), acked: done, errors, warnings: [] };
    },
  };
});
