/**
 * BullMQ's store: our own redis-server child process (Debian's package:
 * apt-get install redis-server), on a free loopback port with its files in
 * the bench's temporary folder, stopped at the end. The system service, if
 * any, is never used. Without redis-server the bench skips BullMQ with a
 * one-line note; that is not a failure.
 *
 * Persistence is off by default (no RDB snapshots, no append-only file), as
 * fsync is off for Postgres: a snapshot taken mid-run would measure the
 * disk. --durable turns on the append-only file with an fsync per write,
 * Redis's nearest equivalent of synchronous_commit.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";
import { ScenarioError, sleep, withTimeout } from "./util.js";

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const PING_EVERY_MS = 20;
/** A port found free may be taken before redis-server binds it; try a few. */
const PORT_TRIES = 3;

export interface RedisProcess {
  /** redis://127.0.0.1:PORT */
  url: string;
  host: string;
  port: number;
  pid: number;
  version: string;
  /** The settings it was started with, for the JSON. */
  settings: Record<string, string>;
  stop(): Promise<void>;
}

export class RedisUnavailable extends Error {
  override name = "RedisUnavailable";
}

export function redisSettings(durable: boolean): Record<string, string> {
  return {
    save: "",
    appendonly: durable ? "yes" : "no",
    ...(durable ? { appendfsync: "always" } : {}),
    // What BullMQ's documentation asks for: keys must never be evicted.
    "maxmemory-policy": "noeviction",
  };
}

/** Starts redis-server in `dir`; rejects with RedisUnavailable when it is not installed or will not start. */
export async function startRedis(dir: string, durable: boolean): Promise<RedisProcess> {
  let version: string;
  try {
    version = execFileSync("redis-server", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).match(/v=(\S+)/)?.[1] ?? "unknown";
  } catch {
    throw new RedisUnavailable("redis-server is not installed (apt-get install -y --no-install-recommends redis-server)");
  }
  mkdirSync(dir, { recursive: true });
  const settings = redisSettings(durable);
  let lastError = "";
  for (let i = 0; i < PORT_TRIES; i++) {
    const port = await freePort();
    try {
      return await launch(dir, port, version, settings);
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
  }
  throw new RedisUnavailable(`redis-server did not start: ${lastError}`);
}

async function launch(dir: string, port: number, version: string, settings: Record<string, string>): Promise<RedisProcess> {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no", "--loglevel", "warning", "--logfile", ""];
  for (const [k, v] of Object.entries(settings)) args.push(`--${k}`, v);
  const proc: ChildProcess = spawn("redis-server", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout!.setEncoding("utf8").on("data", (c: string) => (output = (output + c).slice(-2000)));
  proc.stderr!.setEncoding("utf8").on("data", (c: string) => (output = (output + c).slice(-2000)));
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once("exit", () => ((exited = true), resolve())));
  const spawnError = new Promise<never>((_, reject) => proc.once("error", (e) => reject(e)));
  spawnError.catch(() => {});
  const ready = (async () => {
    for (;;) {
      if (exited) throw new Error(`exited: ${output.trim().split("\n").slice(-2).join(" | ")}`);
      if (await ping(port)) return;
      await sleep(PING_EVERY_MS);
    }
  })();
  try {
    await withTimeout(Promise.race([ready, spawnError]), READY_TIMEOUT_MS, "redis-server: no PONG");
  } catch (err) {
    if (!exited) proc.kill("SIGKILL");
    throw err;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    host: "127.0.0.1",
    port,
    pid: proc.pid!,
    version,
    settings,
    async stop() {
      if (exited) return;
      proc.kill("SIGTERM");
      await withTimeout(exit, STOP_TIMEOUT_MS, "redis-server: did not exit after SIGTERM").catch((err) => {
        proc.kill("SIGKILL");
        throw err;
      });
    },
  };
}

/** A loopback port nothing listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** One inline PING; true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once("error", () => done(false));
    sock.once("connect", () => sock.write("PING\r\n"));
    sock.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
  });
}

export function parseRedisUrl(url: string): { host: string; port: number } {
  const u = new URL(url);
  if (u.protocol !== "redis:") throw new ScenarioError(`not a redis:// address: ${url}`);
  return { host: u.hostname, port: Number(u.port) };
}
