/**
 * A jobwire worker process: the Worker runtime from @jobwire/client, as a
 * user runs it, with one no-op handler. It counts a job as acked when the
 * runtime reports it finished with outcome "completed", which it does only
 * after the broker answered the Ack.
 */
import { Worker, type Logger } from "@jobwire/client";
import { now, type Payload, type WorkerResult, type WorkerSpec } from "../protocol.js";
import { JOB_TYPE } from "../senders.js";
import { Recorder, errorText, runChild } from "./runtime.js";

runChild<WorkerSpec>(async (spec) => {
  const rec = new Recorder(spec.recordStarts);
  const errors: string[] = [];
  const warnings: string[] = [];
  let acked = 0;
  const logger: Logger = { debug: () => {}, info: () => {}, warn: (m) => warnings.push(m), error: (m) => errors.push(m) };
  const worker = new Worker({
    address: spec.endpoint,
    queues: [spec.queue],
    concurrency: spec.concurrency,
    handleSignals: false,
    logger,
    handlers: {
      [JOB_TYPE]: (job) => {
        rec.add((job.payload as Payload).i, spec.recordStarts ? now() : 0);
      },
    },
    onEvent: (e) => {
      if (e.type !== "job_finished") return;
      if (e.outcome === "completed") acked++;
      else errors.push(`job ${e.jobId} attempt ${e.attempt}: ${e.outcome}`);
    },
  });
  let running: Promise<void> = Promise.resolve();
  return {
    progress: () => acked,
    go: async () => {
      running = worker.run().catch((err) => {
        errors.push(`run() failed: ${errorText(err)}`);
      });
    },
    stop: async (): Promise<WorkerResult> => {
      await worker.stop();
      await running;
      return { handled: rec.indices(), starts: rec.times(), acked, errors, warnings };
    },
  };
});
