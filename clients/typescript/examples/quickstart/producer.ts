/**
 * Enqueues one `greet` job for each name on the command line:
 *
 *   node clients/typescript/examples/dist/quickstart/producer.js ada grace
 */
import { startTracing, stopTracing } from "../tracing.js";
import { JobwireClient } from "@jobwire/client";

startTracing("quickstart-producer");

const client = new JobwireClient({ address: process.env.JOBWIRE_ADDRESS ?? "http://127.0.0.1:50051" });
const names = process.argv.slice(2);
const results = await client.enqueueMany((names.length > 0 ? names : ["world"]).map((name) => ({ type: "greet", payload: { name } })));
for (const r of results) console.log(`enqueued job ${r.id}`);
client.close();
await stopTracing();
