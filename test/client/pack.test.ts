/**
 * The TypeScript client is installable (issue 13, "Installable clients"):
 * `npm pack` of @jobwire/proto and @jobwire/client (whose prepack scripts
 * build them) gives tarballs that `npm install` into an empty project
 * outside the repository, with their dependencies from the npm registry.
 * A script there enqueues a job and works it against a real broker, and a
 * TypeScript file there type-checks against the packed declarations.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type TestBroker, startTestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, uniqueQueue } from "./helpers.js";

const run = promisify(execFile);
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

let tb: TestBroker;
let dir: string;
beforeAll(async () => {
  tb = await startTestBroker();
  dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-pack-"));
});
afterAll(async () => {
  await tb?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Packs a workspace package into `dir` (running its prepack) and returns the tarball's path. */
async function pack(pkg: string): Promise<string> {
  const { stdout } = await run(NPM, ["pack", "--json", "--pack-destination", dir], { cwd: path.join(REPO_ROOT, pkg), maxBuffer: 16 << 20 });
  const [info] = JSON.parse(stdout.slice(stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
  expect(info!.files.some((f) => f.path === "README.md" || f.path.startsWith("dist/"))).toBe(true);
  return path.join(dir, info!.filename);
}

const SMOKE = `
import { JobwireClient, Worker, Code, JobwireError } from "@jobwire/client";

const queue = process.env.QUEUE;
const client = new JobwireClient({ address: process.env.JOBWIRE_ADDRESS, logger: { debug() {}, info() {}, warn: console.error, error: console.error } });
let seen;
const worker = new Worker({ client, queues: [queue], handleSignals: false, handlers: { greet: (job) => { seen = job.payload; } } });
const done = worker.run();
const { id } = await client.enqueue("greet", { name: "packed" }, { queue, concurrencyKey: "tenant:1" });
let job;
for (let i = 0; i < 400; i++) {
  job = await client.getJob(id);
  if (job.state === "COMPLETED") break;
  await new Promise((r) => setTimeout(r, 25));
}
await worker.stop();
await done;
const bad = await client.enqueue("greet", {}, { queue: "not a queue!" }).catch((e) => e);
client.close();
console.log(JSON.stringify({
  resolved: import.meta.resolve("@jobwire/client"),
  state: job.state,
  attempt: job.attempt,
  concurrencyKey: job.concurrencyKey,
  seen,
  error: { isJobwireError: bad instanceof JobwireError, invalid: bad.code === Code.InvalidArgument, message: bad.message },
}));
`;

const TYPED = `
import { JobwireClient, type QueueConfig, type WorkerJob } from "@jobwire/client";

const client = new JobwireClient({ address: ["http://a:1", "http://b:2"], tls: { ca: "PEM" } });
const cfg: Promise<QueueConfig> = client.setQueueConfig("q", { maxRunning: 5, rateLimit: null });
export const handler = (job: WorkerJob<{ name: string }>): string => job.payload.name;
void cfg;
`;

describe("npm pack", () => {
  it("gives tarballs that install into an empty project and work against a broker", { timeout: 180_000 }, async () => {
    const proto = await pack("proto");
    const client = await pack("clients/typescript");
    const app = path.join(dir, "app");
    await mkdir(app);
    await writeFile(path.join(app, "package.json"), JSON.stringify({ name: "jobwire-pack-smoke", private: true, type: "module" }));
    // The peer @opentelemetry/api comes along (npm installs peers); @types/node and
    // typescript are for the type check below.
    const tsVersion = (JSON.parse(await readFile(path.join(REPO_ROOT, "node_modules/typescript/package.json"), "utf8")) as { version: string }).version;
    await run(NPM, ["install", "--no-audit", "--no-fund", "--loglevel=error", proto, client, "@types/node@20", `typescript@${tsVersion}`], {
      cwd: app,
      maxBuffer: 16 << 20,
    });

    await writeFile(path.join(app, "smoke.mjs"), SMOKE);
    const queue = uniqueQueue("pack");
    const { stdout } = await run(process.execPath, ["smoke.mjs"], { cwd: app, env: { ...process.env, JOBWIRE_ADDRESS: tb.url, QUEUE: queue }, timeout: 60_000 });
    const out = JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, unknown>;
    expect(String(out.resolved)).toContain(`${app}/node_modules/@jobwire/client/`);
    expect(out).toMatchObject({ state: "COMPLETED", attempt: 1, concurrencyKey: "tenant:1", seen: { name: "packed" } });
    expect(out.error).toMatchObject({ isJobwireError: true, invalid: true, message: expect.stringMatching(/^invalid_argument: /) });

    await writeFile(path.join(app, "typed.ts"), TYPED);
    await writeFile(
      path.join(app, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { strict: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", noEmit: true, types: ["node"] }, files: ["typed.ts"] }),
    );
    await run(process.execPath, [path.join(app, "node_modules/typescript/bin/tsc"), "-p", app], { cwd: app });
  });
});
