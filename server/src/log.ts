/**
 * A small structured logger: one JSON object per line on stderr, so stdout
 * stays free for the "listening on" line that harnesses read.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Warnings repeat in bursts: while Postgres was down, every enqueue, claim
 * and loop pass logged one, 949 lines in 4 s. A warning logged again within
 * this window is counted instead of written; the next one written says how
 * many were held back ("repeated").
 */
const REPEAT_WINDOW_MS = 10_000;
/** Distinct warnings remembered at once; past it the memory starts afresh. */
const MAX_REMEMBERED = 1000;

export function createLogger(level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l), now: () => number = Date.now): Logger {
  const min = RANK[level];
  const recent = new Map<string, { at: number; held: number }>();
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (RANK[lvl] < min) return;
    let repeated = 0;
    if (lvl === "warn") {
      const t = now();
      const seen = recent.get(msg);
      if (seen && t - seen.at < REPEAT_WINDOW_MS) {
        seen.held++;
        return;
      }
      repeated = seen?.held ?? 0;
      if (recent.size >= MAX_REMEMBERED) recent.clear();
      recent.set(msg, { at: t, held: 0 });
    }
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg, ...fields };
    if (repeated > 0) rec.repeated = repeated;
    for (const [k, v] of Object.entries(rec)) {
      if (v instanceof Error) rec[k] = errorRecord(v, lvl === "error" || level === "debug");
    }
    write(`${JSON.stringify(rec)}\n`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

/**
 * An error as a log field. The stack only for errors (a bug to find) and at
 * debug level: a warning is an expected condition, a dropped connection or
 * a database restart, and its stack said nothing its message did not.
 */
function errorRecord(e: Error, stack: boolean): Record<string, unknown> {
  const code = (e as { code?: unknown }).code;
  const cause = e.cause instanceof Error ? errorRecord(e.cause, stack) : undefined;
  return {
    name: e.name,
    message: e.message,
    ...(typeof code === "string" || typeof code === "number" ? { code } : {}),
    ...(cause ? { cause } : {}),
    ...(stack ? { stack: e.stack } : {}),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
