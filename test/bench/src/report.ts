/**
 * The printed table (one row per scenario and system, as each finishes,
 * then the whole table again with the headline ratios) and the JSON files
 * beside it, one per scenario.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Options, ScenarioName } from "./options.js";

export interface Target {
  /** "p50 <= 5 ms" */
  goal: string;
  /** The measured figure it is judged on, formatted. */
  measured: string;
  /** null: not judged (a peer was not run). */
  pass: boolean | null;
}

export interface Row {
  scenario: ScenarioName | "headline";
  system: string;
  result: string;
  targets: Target[];
  /** Set when the scenario broke (lost or repeated jobs, errors, a timeout). */
  error?: string;
}

const COLS = { scenario: 14, system: 18, result: 58 };

export function mark(t: Target): string {
  const m = t.pass === null ? "- n/a" : t.pass ? "✓ pass" : "✗ miss";
  return `${t.goal}: ${t.measured} ${m}`;
}

function line(r: Row): string {
  const result = r.error ? `BROKEN: ${r.error}` : r.result;
  return `${r.scenario.padEnd(COLS.scenario)}${r.system.padEnd(COLS.system)}${result.padEnd(COLS.result)} ${r.targets.map(mark).join("; ")}`.trimEnd();
}

function header(): string {
  return `${"scenario".padEnd(COLS.scenario)}${"system".padEnd(COLS.system)}${"result".padEnd(COLS.result)} targets`;
}

export function machine(pgVersion: string) {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    postgres: pgVersion,
  };
}

export class Report {
  readonly rows: Row[] = [];
  readonly failures: string[] = [];
  private printedHeader = false;

  constructor(
    private readonly opts: Options,
    private readonly context: Record<string, unknown>,
    private readonly write: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
  ) {}

  add(row: Row): void {
    if (!this.printedHeader) {
      this.write(header());
      this.printedHeader = true;
    }
    this.rows.push(row);
    if (row.error) this.failures.push(`${row.scenario} (${row.system}): ${row.error}`);
    this.write(line(row));
  }

  /** bench-results/<scenario>.json: the run's context plus whatever the scenario measured. */
  json(scenario: ScenarioName, data: Record<string, unknown>): string {
    mkdirSync(this.opts.out, { recursive: true });
    const file = path.join(this.opts.out, `${scenario}.json`);
    const body = {
      scenario,
      finishedAt: new Date().toISOString(),
      ...this.context,
      rows: this.rows.filter((r) => r.scenario === scenario),
      ...data,
    };
    writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
    return file;
  }

  /** Adds fields to a scenario's JSON already written (pg_stat_statements under --profile). */
  amend(scenario: ScenarioName, data: Record<string, unknown>): void {
    const file = path.join(this.opts.out, `${scenario}.json`);
    const body = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>) : { scenario };
    writeFileSync(file, `${JSON.stringify({ ...body, ...data }, null, 2)}\n`);
  }

  /** The whole table once more, so the end of the log holds every figure and mark. */
  summary(): void {
    this.write("");
    this.write(header());
    for (const r of this.rows) this.write(line(r));
    const judged = this.rows.flatMap((r) => r.targets).filter((t) => t.pass !== null);
    const passed = judged.filter((t) => t.pass).length;
    this.write("");
    this.write(`targets: ${passed} of ${judged.length} met (speed targets are reported, never enforced)`);
    if (this.failures.length > 0) {
      this.write(`BROKEN scenarios: ${this.failures.length}`);
      for (const f of this.failures) this.write(`  ${f}`);
    } else {
      this.write("every scenario ran correctly: each job was handled and acked exactly once");
    }
  }
}
