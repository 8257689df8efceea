/**
 * Signs up one account: `node .../signup/producer.js ada@example.com`.
 * DATABASE_URL must point at the broker's database (see the README).
 */
import { startTracing, stopTracing } from "../tracing.js";
import { trace } from "@opentelemetry/api";
import pg from "pg";
import { ensureSchema, signUp } from "./signup.js";

startTracing("signup-web");

const email = process.argv[2];
if (!email) {
  console.error("usage: producer.js EMAIL");
  process.exit(2);
}
const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
try {
  await ensureSchema(db);
  // Stands in for the web request: the job's spans join this trace.
  const { accountId, jobId } = await trace.getTracer("signup-example").startActiveSpan("POST /signup", async (span) => {
    try {
      return await signUp(db, email);
    } finally {
      span.end();
    }
  });
  console.log(`account ${accountId} created; welcome email job ${jobId}`);
} finally {
  await db.end();
  await stopTracing();
}
