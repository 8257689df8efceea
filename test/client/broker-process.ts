/**
 * A broker run as its own process (`node server/dist/main.js`), for tests
 * that must kill one hard (SIGKILL) or start it the way an operator does,
 * with environment variables (TLS). It reads the "jobwire listening on"
 * line for its URL, as the conformance harnesses of every client do.
 */
import path from "node:path";
import { type Child, REPO_ROOT, reap, spawnNode } from "./helpers.js";

export const BROKER_MAIN = path.join(REPO_ROOT, "server/dist/main.js");

export interface BrokerProcess {
  child: Child;
  /** http:// or https://, as the broker printed it. */
  url: string;
  /** SIGKILL: no drain, no goodbye to its clients. */
  kill(): Promise<void>;
}

export async function startBrokerProcess(env: Record<string, string>, timeoutMs = 20_000): Promise<BrokerProcess> {
  const child = spawnNode(BROKER_MAIN, {
    JOBWIRE_HOST: "127.0.0.1",
    JOBWIRE_PORT: "0",
    JOBWIRE_REAPER_INTERVAL_MS: "100",
    JOBWIRE_LOG_LEVEL: process.env.JOBWIRE_TEST_LOG ? "debug" : "warn",
    ...env,
  });
  try {
    const [, url] = await child.waitFor(/jobwire listening on (https?:\/\/[^\s]+)/, timeoutMs);
    return { child, url: url!, kill: () => reap(child) };
  } catch (err) {
    await reap(child);
    throw err;
  }
}
