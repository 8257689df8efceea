/**
 * The smallest useful worker: run the broker with `npm start` (it listens on
 * http://127.0.0.1:50051), then
 *
 *   node clients/typescript/examples/dist/quickstart/worker.js
 *   node clients/typescript/examples/dist/quickstart/producer.js ada
 *
 * Ctrl-C stops it gracefully: running jobs finish and are acked first.
 */
import { startTracing, stopTracing } from "../tracing.js";
import { PermanentError, Worker, type WorkerJob } from "@jobwire/client";

startTracing("quickstart-worker");

const worker = new Worker({
  address: process.env.JOBWIRE_ADDRESS ?? "http://127.0.0.1:50051",
  queues: ["default"],
  concurrency: 4,
  handlers: {
    greet: async (job: WorkerJob<{ name?: unknown }>, ctx) => {
      if (typeof job.payload.name !== "string") throw new PermanentError("payload.name must be a string");
      console.log(`hello, ${job.payload.name} (job ${ctx.id}, attempt ${ctx.attempt})`);
    },
  },
});
await worker.run();
await stopTracing();
