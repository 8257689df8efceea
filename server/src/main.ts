#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { startApp } from "./app.js";
import { ConfigError, describeFlags, loadConfig } from "./config.js";
import { createLogger } from "./log.js";

/**
 * `jobwire`: runs the broker until SIGTERM or SIGINT, then drains: no new
 * leases, lease streams end with UNAVAILABLE, calls in flight finish, and
 * jobs already leased keep their leases.
 */
const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(
      `jobwire ${VERSION}: a gRPC job broker on Postgres\n\nusage: jobwire [flags]\n\n` +
        `Each flag can also be set by the environment variable in brackets; a flag wins.\n\n${describeFlags()}\n` +
        `  --version                print the version\n  --help                   print this\n`,
    );
    return;
  }
  if (argv.includes("--version")) {
    process.stdout.write(`jobwire ${VERSION}\n`);
    return;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env, argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`jobwire: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const app = await startApp(config, { log });
  process.stdout.write(
    `jobwire listening on ${app.url} (gRPC, gRPC-Web, Connect); dashboard ${app.url}/, metrics ${app.url}/metrics; ` +
      `database ${config.databaseUrl ? "from DATABASE_URL" : `embedded in ${config.dataDir}`}\n`,
  );
  // One Ctrl-C under `npm start` arrives twice, a millisecond apart: the
  // terminal signals the whole process group, and npm passes its own copy
  // on. Treated as a second, impatient signal, it made the broker exit at
  // once and leave its embedded Postgres running. So a repeat within a
  // second is the same request; a later one skips the drain, but still
  // stops Postgres.
  let first = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    const now = Date.now();
    if (first !== 0) {
      if (now - first < SAME_SIGNAL_MS) return;
      log.warn("second signal: exiting without draining", { signal: sig });
      void app.abort().finally(() => process.exit(1));
      return;
    }
    first = now;
    log.info("shutting down", { signal: sig });
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("shutdown failed", { err: err instanceof Error ? err.message : String(err) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Rotation without a restart: the tokens file and the TLS certificate.
  process.on("SIGHUP", () => {
    log.info("SIGHUP: reloading the tokens file and TLS certificate");
    void app.reload();
  });
}

/** Signals closer together than this are one request (see onSignal). */
const SAME_SIGNAL_MS = 1000;

main().catch((err: unknown) => {
  // One line: what failed and why. The stack only at debug level.
  const detail = err instanceof Error ? (process.env.JOBWIRE_LOG_LEVEL === "debug" ? (err.stack ?? err.message) : err.message) : String(err);
  process.stderr.write(`jobwire: failed to start: ${detail}\n`);
  process.exit(1);
});
