import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

/**
 * The README's first command, `npm start`, as a user runs it: on the
 * embedded default, then stopped with SIGTERM (issue 14, finding 12), and
 * the command line's messages (issue 13).
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
});

function run(cmd: string, args: string[], env: Record<string, string>, detached = false): { child: ChildProcess; out: () => string; line: Promise<string> } {
  // detached: a process group of its own, as a terminal gives a command.
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached });
  let out = "";
  const line = new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /jobwire listening on .*\n/.exec(out);
      if (m) resolve(m[0]);
    });
    child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
    child.once("exit", (code) => reject(new Error(`exited ${code} before listening:\n${out}`)));
  });
  line.catch(() => {});
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      if (detached) process.kill(-child.pid!, "SIGKILL");
      else child.kill("SIGKILL");
      await once(child, "exit");
    }
  });
  return { child, out: () => out, line };
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-start-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, "data");
}

describe("npm start", () => {
  it("serves on the embedded default, names its URLs, and stops broker and Postgres on SIGTERM", async () => {
    const { child, line } = run("npm", ["start", "--silent"], { JOBWIRE_PORT: "0", JOBWIRE_DATA_DIR: await dataDir() });
    const banner = await line;
    expect(banner).toMatch(/dashboard http:\/\/127\.0\.0\.1:\d+\/, metrics http:\/\/127\.0\.0\.1:\d+\/metrics/);
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(banner)![1]);
    expect(await portAnswers(port)).toBe(true);
    child.kill("SIGTERM"); // to npm itself, as a process manager would
    const [code] = await once(child, "exit");
    expect(code).toBe(0);
    // No orphan: the broker's port is closed once npm has exited.
    expect(await portAnswers(port)).toBe(false);
  });

  it("stops broker and Postgres on Ctrl-C with a worker connected, without a stack trace", async () => {
    // Ctrl-C: the terminal sends SIGINT to the whole process group, and npm
    // passes its own copy on, so the broker gets it twice at once. That
    // once made it exit at once and leave its Postgres running.
    const data = await dataDir();
    const { child, line, out } = run("npm", ["start", "--silent"], { JOBWIRE_PORT: "0", JOBWIRE_DATA_DIR: data }, true);
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(await line)![1]);
    const { JobwireClient, Worker } = await import("@jobwire/client");
    const address = `http://127.0.0.1:${port}`;
    const client = new JobwireClient({ address });
    const done = new Promise<void>((resolve) => {
      const worker = new Worker({ address, queues: ["ctrl-c"], handlers: { t: async () => resolve() } });
      cleanup.push(() => worker.stop());
      void worker.run().catch(() => {});
    });
    await client.enqueue("t", {}, { queue: "ctrl-c" });
    await done; // a Lease stream is open
    client.close();
    process.kill(-child.pid!, "SIGINT");
    const [code] = await once(child, "exit");
    expect(code, out()).toBe(0);
    expect(out()).not.toMatch(/\n\s+at /);
    expect(out()).not.toMatch(/second signal/);
    // Postgres stopped too: its pid file is gone.
    await expect(import("node:fs/promises").then((fs) => fs.stat(path.join(data, "pg", "postmaster.pid")))).rejects.toThrow();
    expect(await portAnswers(port)).toBe(false);
  });

  it("says a taken port is taken before it starts Postgres", async () => {
    const blocker = net.createServer().listen(0, "127.0.0.1");
    await once(blocker, "listening");
    cleanup.push(() => new Promise((r) => blocker.close(r)));
    const port = (blocker.address() as net.AddressInfo).port;
    const data = await dataDir();
    const { child, out } = run(process.execPath, ["server/dist/main.js"], { JOBWIRE_PORT: String(port), JOBWIRE_DATA_DIR: data });
    const [code] = await once(child, "exit");
    expect(code).toBe(1);
    expect(out()).toContain(`jobwire: failed to start: port ${port} on 127.0.0.1 is already in use (JOBWIRE_PORT)`);
    expect(out()).not.toMatch(/\n\s+at /); // one line, no stack
    // Nothing was started: no embedded Postgres data directory.
    await expect(import("node:fs/promises").then((fs) => fs.stat(path.join(data, "pg")))).rejects.toThrow();
  });

  it("explains a bad DATABASE_URL, and lists every flag with a line of help", async () => {
    for (const [url, msg] of [
      ["not-a-url", /DATABASE_URL must be a Postgres URL such as postgres:\/\//],
      ["mysql://u@h/db", /must be a Postgres URL \(postgres:\/\/ or postgresql:\/\/\), got a mysql:\/\/ URL/],
    ] as const) {
      const { child, out } = run(process.execPath, ["server/dist/main.js"], { DATABASE_URL: url });
      const [code] = await once(child, "exit");
      expect(code).toBe(2);
      expect(out()).toMatch(msg);
    }
    const help = run(process.execPath, ["server/dist/main.js", "--help"], {});
    await once(help.child, "exit");
    for (const flag of ["--port", "--database-url", "--embedded-pg-port", "--reaper-batch"]) expect(help.out()).toMatch(new RegExp(`${flag} +\\S.*\\[`));
    const version = run(process.execPath, ["server/dist/main.js", "--version"], {});
    await once(version.child, "exit");
    expect(version.out()).toMatch(/^jobwire \d+\.\d+\.\d+\n$/);
  });
});
