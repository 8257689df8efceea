/**
 * A BullMQ worker process: one Worker on the scenario's queue with a no-op
 * processor, tuned as in peers.ts (the same concurrency as jobwire's
 * workers). It counts a job as acked on BullMQ's "completed" event, which
 * the Worker emits after the job was moved to completed in Redis.
 */
import { Worker } from "bullmq";
import { bullmqTuning } from "../peers.js";
import { now, type Payload, type WorkerResult, type WorkerSpec } from "../protocol.js";
import { parseRedisUrl } from "../redis.js";
import { Recorder, errorText, runChild } from "./runtime.js";

runChild<WorkerSpec>(async (spec) => {
  const rec = new Recorder(spec.recordStarts);
  const errors: string[] = [];
  const warnings: string[] = [];
  let acked = 0;
  const worker = new Worker<Payload>(
    spec.queue,
    async (job) => {
      rec.add(job.data.i, spec.recordStarts ? now() : 0);
    },
    { connection: parseRedisUrl(spec.endpoint), autorun: false, ...bullmqTuning(spec.concurrency) },
  );
  worker.on("completed", () => acked++);
  worker.on("failed", (job, err) => errors.push(`job ${job?.id} failed: ${err.message}`));
  worker.on("error", (err) => errors.push(`worker error: ${errorText(err)}`));
  // A stalled job runs again elsewhere: the tally reports it as handled twice.
  worker.on("stalled", (id) => warnings.push(`job ${id} stalled`));
  await worker.waitUntilReady();
  let running: Promise<void> = Promise.resolve();
  return {
    progress: () => acked,
    go: async () => {
      running = worker.run().catch((err) => {
        errors.push(`run() failed: ${errorText(err)}`);
      });
    },
    stop: async (): Promise<WorkerResult> => {
      await worker.close();
      await running;
      return { handled: rec.indices(), starts: rec.times(), acked, errors, warnings };
    },
  };
});
