/**
 * A graphile-worker process: run() with a task list of one no-op task
 * (named after the scenario's queue), tuned as in peers.ts. Completions are
 * batched inside graphile-worker, so "acked" here means the handler
 * returned; the bench confirms completion in the database.
 */
import { run, type Runner } from "graphile-worker";
import { GRAPHILE_TUNING, quietGraphileLogger } from "../peers.js";
import { now, type Payload, type WorkerResult, type WorkerSpec } from "../protocol.js";
import { Recorder, runChild } from "./runtime.js";

runChild<WorkerSpec>(async (spec) => {
  const rec = new Recorder(spec.recordStarts);
  const errors: string[] = [];
  let done = 0;
  let runner: Runner | undefined;
  return {
    progress: () => done,
    go: async () => {
      runner = await run({
        connectionString: spec.endpoint,
        concurrency: GRAPHILE_TUNING.concurrentJobs,
        maxPoolSize: GRAPHILE_TUNING.maxPoolSize,
        noHandleSignals: true,
        logger: quietGraphileLogger(errors),
        preset: {
          worker: {
            localQueue: GRAPHILE_TUNING.localQueue,
            completeJobBatchDelay: GRAPHILE_TUNING.completeJobBatchDelay,
            failJobBatchDelay: GRAPHILE_TUNING.failJobBatchDelay,
          },
        },
        taskList: {
          [spec.queue]: async (payload) => {
            rec.add((payload as Payload).i, spec.recordStarts ? now() : 0);
            done++;
          },
        },
      });
      runner.events.on("job:failed", ({ job, error }) => errors.push(`job ${job.id} failed: ${String(error)}`));
    },
    stop: async (): Promise<WorkerResult> => {
      await runner?.stop();
      return { handled: rec.indices(), starts: rec.times(), acked: done, errors, warnings: [] };
    },
  };
});
