/**
 * The TypeScript examples, run as their READMEs say, as separate processes
 * against a real broker: the transactional signup flow and the quickstart.
 */
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureSchema, signUp } from "../../clients/typescript/examples/dist/signup/signup.js";
import { type Child, type Env, REPO_ROOT, reap, setup, spawnNode, waitForState, within } from "./helpers.js";

const EXAMPLES = path.join(REPO_ROOT, "clients/typescript/examples/dist");

let env: Env;
const children: Child[] = [];
beforeAll(async () => {
  env = await setup();
});
afterAll(async () => {
  await Promise.all(children.map(reap));
  await env?.teardown();
});

function run(script: string, vars: Record<string, string>, args: string[] = []): Child {
  const c = spawnNode(path.join(EXAMPLES, script), vars, args);
  children.push(c);
  return c;
}

describe("examples", () => {
  it("signup: the account and its welcome email commit together, and the email is sent once", async () => {
    const vars = { DATABASE_URL: env.tb.databaseUrl, JOBWIRE_ADDRESS: env.tb.url };
    const producer = run("signup/producer.js", vars, ["ada@example.com"]);
    const [, accountId, jobId] = await producer.waitFor(/^account (\d+) created; welcome email job (\d+)$/, 15_000);
    expect(await within(producer.exited, 10_000, "the producer to exit")).toBe(0);

    const worker = run("signup/worker.js", vars);
    await waitForState(env.client, jobId!, "COMPLETED", 15_000);
    await worker.waitFor(/^sent "Welcome!" to ada@example\.com$/, 5000);
    const { rows } = await env.tb.db.query("SELECT welcome_email_sent_at FROM accounts WHERE id = $1", [accountId]);
    expect(rows[0].welcome_email_sent_at).toBeInstanceOf(Date);

    // A second delivery of the same job (as after a crash) sends nothing.
    const again = await env.client.enqueue("send_welcome_email", { accountId }, { queue: "emails" });
    await waitForState(env.client, again.id, "COMPLETED", 15_000);
    await worker.waitFor(/^welcome email to ada@example\.com already sent; nothing to do$/, 5000);
    expect(worker.lines.filter((l) => l.startsWith("sent ")).length).toBe(1);

    worker.proc.kill("SIGTERM");
    expect(await within(worker.exited, 10_000, "the worker to exit")).toBe(0);
  });

  it("signup: a failed signup enqueues nothing", async () => {
    const db = new pg.Pool({ connectionString: env.tb.databaseUrl, max: 2 });
    try {
      await ensureSchema(db);
      await signUp(db, "grace@example.com");
      const count = async () =>
        Number((await db.query("SELECT count(*) AS n FROM jobwire.jobs WHERE queue = 'emails'")).rows[0].n);
      const before = await count();
      await expect(signUp(db, "grace@example.com")).rejects.toThrow(/duplicate key/);
      expect(await count()).toBe(before);
    } finally {
      await db.end();
    }
  });

  it("quickstart: a worker started in ten lines greets", async () => {
    const vars = { JOBWIRE_ADDRESS: env.tb.url };
    const worker = run("quickstart/worker.js", vars);
    const producer = run("quickstart/producer.js", vars, ["ada"]);
    const [, id] = await producer.waitFor(/^enqueued job (\d+)$/, 15_000);
    await waitForState(env.client, id!, "COMPLETED", 15_000);
    await worker.waitFor(/^hello, ada \(job \d+, attempt 1\)$/, 5000);
    worker.proc.kill("SIGINT");
    expect(await within(worker.exited, 10_000, "the worker to exit")).toBe(0);
  });
});
