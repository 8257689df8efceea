/**
 * Sends welcome emails: `node .../signup/worker.js`. Needs DATABASE_URL
 * (the broker's database, for the accounts table) and JOBWIRE_ADDRESS.
 * SIGTERM or Ctrl-C drains it: running sends finish and are acked first.
 */
import { startTracing, stopTracing } from "../tracing.js";
import { Worker } from "@jobwire/client";
import pg from "pg";
import { EMAIL_QUEUE, WELCOME_EMAIL, consoleMailer, ensureSchema, welcomeEmailHandler } from "./signup.js";

startTracing("signup-worker");

const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 5 });
await ensureSchema(db);
const worker = new Worker({
  address: process.env.JOBWIRE_ADDRESS ?? "http://127.0.0.1:50051",
  queues: [EMAIL_QUEUE],
  concurrency: 5,
  handlers: { [WELCOME_EMAIL]: welcomeEmailHandler(db, consoleMailer) },
});
try {
  await worker.run();
} finally {
  await db.end();
  await stopTracing();
}
