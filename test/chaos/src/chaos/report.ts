/** The Jepsen-style table of one fault, and the summary of the run. */
import { fmtMs, renderTable } from "../common/util.js";
import type { FaultResult } from "./scenario.js";

export const COLUMNS = ["acknowledged", "ok", "lost", "duplicated", "unexpected", "stuck", "recovery p50/max"];

export function failed(r: FaultResult): boolean {
  return r.tally.lost > 0 || r.tally.stuck > 0 || r.tally.unexpected > 0 || r.fixtureProblems.length > 0 || r.crashes > 0;
}

function row(r: FaultResult): (string | number)[] {
  const t = r.tally;
  return [t.acknowledged, t.ok, t.lost, t.duplicated, t.unexpected, t.stuck, r.recovery.summary()];
}

export function renderFault(r: FaultResult): string {
  const topo = r.topology;
  const out: string[] = [];
  out.push(
    `== ${r.fault.title}  [${r.fault.id}]`,
    `   ${topo.replicas} broker(s), ${topo.replicas * topo.workersPerReplica} workers × ${topo.concurrency}, ` +
      `${topo.rate} jobs/s offered for ${(r.loadMs / 1000).toFixed(1)} s, ${r.events} fault event(s)`,
    renderTable(COLUMNS, [row(r)]),
  );
  const t = r.tally;
  out.push(
    `   drain: ${r.drainMs === null ? "NOT drained within the deadline" : `${fmtMs(r.drainMs)} after the load ended, everything healthy`}` +
      `; most executions of one job: ${t.maxEffects}`,
  );
  out.push(`   producers saw: ${r.producerErrors}${t.indeterminate > 0 ? `; indeterminate enqueues: ${t.indeterminate} (${t.indeterminateFound} exist)` : ""}`);
  if (r.producerOddErrors.length > 0)
    out.push(`   WARNING: producers were answered ${r.producerOddErrors.join(", ")}: during a fault, clients should only be told to retry (UNAVAILABLE)`);
  if (r.crashes > 0) out.push(`   broker crashes (exits we did not cause): ${r.crashes}`);
  const events = r.recovery.events;
  if (events.length > 0) {
    out.push("   recovery events (from the fault until its work was done):");
    const shown = events.length > 12 ? [...events.filter((e) => e.recoveredAt === null).slice(0, 6), ...events.filter((e) => e.recoveredAt !== null).slice(0, 6)] : events;
    for (const e of shown) out.push(`     ${e.recoveredAt === null ? "never " : fmtMs(e.recoveredAt - e.at).padStart(7)}  ${e.label}${e.note ? `: ${e.note}` : ""}`);
    if (shown.length < events.length) out.push(`     … ${events.length - shown.length} more`);
  }
  for (const n of r.notes) out.push(`   note: ${n}`);
  for (const p of r.fixtureProblems) out.push(`   FAIL: ${p}`);
  for (const d of t.details) out.push(`   ${d}`);
  if (r.brokerLog.length > 0) {
    out.push("   broker warnings and errors:");
    for (const l of r.brokerLog) out.push(`     ${l}`);
  }
  out.push(`   verdict: ${failed(r) ? "FAIL" : "PASS"}`);
  return out.join("\n");
}

export function renderSummary(results: FaultResult[], errors: Map<string, string>): string {
  const rows = results.map((r) => [r.fault.id, ...row(r), failed(r) ? "FAIL" : "PASS"]);
  for (const [id, msg] of errors) rows.push([id, "-", "-", "-", "-", "-", "-", "-", `ERROR: ${msg.split("\n")[0]!.slice(0, 80)}`]);
  return renderTable(["fault", ...COLUMNS, "verdict"], rows);
}
