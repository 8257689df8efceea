import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { startEmbedded, type EmbeddedPostgres } from "./embedded.js";

/**
 * The embedded Postgres (issue 14, findings 10 and 11), with real servers.
 * mkdtemp makes 0700 directories, which is the case finding 11 is about
 * when the tests run as root (as CI does).
 */
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => {});
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-embedded-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function started(dir: string, port = 0): Promise<EmbeddedPostgres> {
  const e = await startEmbedded({ dir, port, unsafeFast: true });
  cleanup.push(() => e.stop());
  return e;
}

async function dataDirOf(url: string): Promise<string> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query("SELECT current_setting('data_directory') AS d")).rows[0].d;
  } finally {
    await c.end();
  }
}

describe("embedded Postgres", () => {
  it("starts in a directory only its owner can enter, as root too (finding 11)", async () => {
    const dir = path.join(await tempDir(), "data");
    const e = await started(dir);
    expect(await dataDirOf(e.url("postgres"))).toContain(dir);
  });

  it("refuses a data directory a running Postgres holds, and leaves that server alone (finding 10)", async () => {
    const dir = await tempDir();
    const first = await started(dir);
    await expect(startEmbedded({ dir, port: 0 })).rejects.toThrow(/is in use by a running Postgres .* started by jobwire/);
    // The first broker's database is still up.
    expect(await dataDirOf(first.url("postgres"))).toContain(dir);
  });

  it("never serves another server's database when its port is taken (finding 10)", async () => {
    const first = await started(await tempDir());
    await expect(startEmbedded({ dir: await tempDir(), port: first.port })).rejects.toThrow(/did not start on port/);
  });

  it("never signals a process it did not start, whatever postmaster.pid names (finding 10)", async () => {
    const dir = await tempDir();
    const e = await startEmbedded({ dir, port: 0 });
    await e.stop();
    // An unrelated process, named by a leftover postmaster.pid.
    const bystander = spawn("sleep", ["60"], { stdio: "ignore" });
    cleanup.push(async () => bystander.kill());
    await writeFile(path.join(dir, "pg", "postmaster.pid"), `${bystander.pid}\n${path.join(dir, "pg")}\n`);
    await expect(startEmbedded({ dir, port: 0 })).rejects.toThrow(/in use by a running Postgres .* started by another program/);
    expect(bystander.exitCode).toBeNull();
    expect(bystander.signalCode).toBeNull();
  });

  it("takes over the server a SIGKILLed jobwire left behind, through pg_ctl", async () => {
    const dir = await tempDir();
    // A broker process that starts Postgres, says so, and is then killed.
    // It runs the built module (npm test builds first).
    const built = new URL("../../dist/store/embedded.js", import.meta.url).href;
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { startEmbedded } = await import(${JSON.stringify(built)});
         const e = await startEmbedded({ dir: ${JSON.stringify(dir)}, port: 0, unsafeFast: true });
         console.log("port " + e.port);
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const [line] = (await once(child.stdout!, "data")) as [Buffer];
    const orphanPort = Number(/port (\d+)/.exec(line.toString())![1]);
    child.kill("SIGKILL");
    await once(child, "exit");
    const e = await started(dir);
    expect(await dataDirOf(e.url("postgres"))).toContain(dir);
    // The orphan is gone: its port no longer answers.
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(orphanPort, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(false)));
      s.once("error", () => resolve(true));
    });
    expect(refused || orphanPort === e.port).toBe(true);
  });
});
