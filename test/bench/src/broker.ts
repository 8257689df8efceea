/**
 * The broker under test: `node server/dist/main.js`, a real process on
 * loopback, configured only through its environment. JOBWIRE_* variables
 * set when the bench starts pass through, so the broker can be tuned per
 * run (JOBWIRE_CLAIM_BATCH=1000 npm run bench); the JSON records them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { cleanEnv, withTimeout } from "./util.js";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const MAIN = fileURLToPath(new URL("../../../server/dist/main.js", import.meta.url));
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;

export interface BrokerProcess {
  address: string;
  pid: number;
  /** The JOBWIRE_* settings it ran with (beyond the defaults). */
  settings: Record<string, string>;
  stop(): Promise<void>;
}

export async function startBroker(databaseUrl: string, execArgv: string[] = []): Promise<BrokerProcess> {
  const env = cleanEnv({ DATABASE_URL: databaseUrl, JOBWIRE_PORT: "0", JOBWIRE_LOG_LEVEL: process.env.JOBWIRE_LOG_LEVEL ?? "warn" });
  const settings = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("JOBWIRE_") && k !== "JOBWIRE_PORT")) as Record<string, string>;
  const proc: ChildProcess = spawn(process.execPath, [...execArgv, MAIN], { env, stdio: ["ignore", "pipe", "inherit"] });
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once("exit", () => ((exited = true), resolve())));
  const address = await withTimeout(
    new Promise<string>((resolve, reject) => {
      let buf = "";
      proc.stdout!.setEncoding("utf8");
      proc.stdout!.on("data", (chunk: string) => {
        buf += chunk;
        const m = buf.match(/jobwire listening on (http:\/\/[^\s]+)/);
        if (m) resolve(m[1]!);
      });
      proc.once("exit", (code) => reject(new Error(`the broker exited (${code}) before listening`)));
    }),
    READY_TIMEOUT_MS,
    "broker: not listening",
  );
  return {
    address,
    pid: proc.pid!,
    settings,
    async stop() {
      if (exited) return;
      proc.kill("SIGTERM");
      await withTimeout(exit, STOP_TIMEOUT_MS, "broker: did not exit after SIGTERM").catch((err) => {
        proc.kill("SIGKILL");
        throw err;
      });
    },
  };
}
