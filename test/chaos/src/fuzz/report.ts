/** The fuzzer's report: targets, what was sent and answered, every distinct failure with a reproduction. */
import { renderTable } from "../common/util.js";
import type { Allocator } from "../common/allocator.js";
import type { HalfOpenResult, RssResult, StuckResult } from "./after.js";
import { buildCase, type FuzzCase } from "./cases.js";
import { PROTOCOLS } from "./protocols.js";
import { KEY_SEP, type Group, type Runner } from "./runner.js";
import type { Pools } from "./values.js";

const MB = (kib: number | null) => (kib === null ? "—" : `${(kib / 1024).toFixed(1)} MB`);

export interface Verdict {
  internal: number;
  crashes: number;
  stuck: number;
  rssOk: boolean;
}

export function verdict(r: Runner, stuck: StuckResult | null, rss: RssResult | null): Verdict {
  const internal = [...r.failures.values()].reduce((a, g) => a + g.count, 0);
  return {
    internal,
    crashes: r.crashes.length,
    stuck: stuck ? stuck.expiredRunning.length + stuck.undelivered.length + (stuck.reaperMs === null ? 1 : 0) : 0,
    rssOk: rss?.ok ?? false,
  };
}

/**
 * With rssInformational the RSS target is reported, not enforced. npm test
 * asks for that when the broker runs on glibc's malloc (libjemalloc2 not
 * installed, --rss-informational-on-glibc): there the broker misses the
 * target, its RSS ending 40-55% over its warmed-up baseline while V8's
 * heap is back at its own. That growth is glibc's main
 * arena ([heap] in smaps, 8 -> 22 MB) and its thread arenas, reached within
 * the first ~1,000 cases and flat after (a run three times as long ends no
 * higher): request bodies of megabytes raise glibc's dynamic mmap
 * threshold, so later ones come from the heap, which keeps its high-water
 * mark. Retention, not a leak. On jemalloc, as the Docker image runs the
 * broker, the same runs end 9-10% over the baseline (common/allocator.ts).
 */
export function passed(v: Verdict, rssInformational = false): boolean {
  return v.internal === 0 && v.crashes === 0 && v.stuck === 0 && (v.rssOk || rssInformational);
}

export function renderTargets(v: Verdict, rss: RssResult | null, allocator: Allocator): string {
  const rssText = rss
    ? `${MB(rss.baselineKiB)} → ${MB(rss.endKiB)} (${rss.endKiB === null ? "?" : `${(((rss.endKiB - rss.baselineKiB) / rss.baselineKiB) * 100).toFixed(0)}%`}; peak ${MB(rss.peakKiB)})`
    : "not measured";
  return renderTable(
    ["target", "measured", "goal", "result"],
    [
      ["answers INTERNAL or UNKNOWN (or bare HTTP 5xx)", String(v.internal), "0", v.internal === 0 ? "PASS" : "FAIL"],
      ["broker crashes", String(v.crashes), "0", v.crashes === 0 ? "PASS" : "FAIL"],
      ["jobs stuck afterwards", String(v.stuck), "0", v.stuck === 0 ? "PASS" : "FAIL"],
      [`broker RSS on ${allocator}, warmed-up baseline → after settling`, rssText, "≤ +20%", v.rssOk ? "PASS" : "FAIL"],
    ],
  );
}

/** Where the broker's memory went: V8 heap, external and array buffers, at the baseline and at the end (after a GC). */
export function renderMemory(rss: RssResult | null): string | null {
  if (!rss?.memBase || !rss.memEnd) return null;
  const b = rss.memBase;
  const e = rss.memEnd;
  const f = (k: string) => `${k} ${((b[k] ?? 0) / 1048576).toFixed(1)} → ${((e[k] ?? 0) / 1048576).toFixed(1)} MB`;
  return `  broker memory after a GC, baseline → end: ${["rss", "heapTotal", "heapUsed", "external", "arrayBuffers"].map(f).join(", ")}`;
}

export function renderTraffic(r: Runner): string {
  const codes = [...r.codes.entries()].sort((a, b) => b[1] - a[1]);
  const top = codes.slice(0, 9).map(([c]) => c);
  const rows = PROTOCOLS.map((p) => {
    const m = r.byProtocol.get(p.name) ?? new Map<string, number>();
    const total = [...m.values()].reduce((a, b) => a + b, 0);
    const other = total - top.reduce((a, c) => a + (m.get(c) ?? 0), 0);
    return [p.name, total, ...top.map((c) => m.get(c) ?? 0), other];
  });
  return renderTable(["protocol", "sent", ...top, "other"], rows);
}

export function renderRpcs(r: Runner): string {
  const rows = [...r.byRpc.entries()].map(([name, s]) => [name, s.sent, s.failing]);
  return renderTable(["rpc", "sent", "INTERNAL/UNKNOWN"], rows);
}

/** A shell line that sends the case again: printf | curl for small bodies, otherwise only --replay. */
export function curlLine(c: FuzzCase, origin = "http://127.0.0.1:50051"): string | null {
  const r = c.request;
  if (r.halfSend || r.body.length > 120) return null;
  const esc = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  if (Object.values(r.headers).some((v) => v.length > 200) || r.path.length > 300) return null;
  const hdrs = Object.entries(r.headers).map(([k, v]) => `-H ${esc(`${k}: ${v}`)}`).join(" ");
  const proto = c.protocol.http === 2 ? "--http2-prior-knowledge" : "--http1.1";
  const data = r.body.length > 0 ? `printf '${[...r.body].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}' | ` : "";
  return `${data}curl -sS -i ${proto} -X ${r.method} ${hdrs}${data ? " --data-binary @-" : ""} ${esc(origin + r.path)}`;
}

function countBy<T>(items: T[], key: (t: T) => string, weight: (t: T) => number): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + weight(i));
  return [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ");
}

/**
 * Groups by what the broker answered (code and message with numbers
 * blanked), then lists every distinct (rpc, protocol) under it on one line,
 * with a few reproductions per answer.
 */
function groupLines(groups: Group[], seed: number, pools: Pools, title: string, withAlone: boolean, reproductions = 2): string[] {
  const out: string[] = [];
  const byAnswer = new Map<string, Group[]>();
  for (const g of groups) {
    const [, , code, msg] = g.key.split(KEY_SEP);
    const k = `${code} "${msg}"`;
    byAnswer.set(k, [...(byAnswer.get(k) ?? []), g]);
  }
  out.push(`${title}: ${groups.reduce((a, g) => a + g.count, 0)} answers, ${byAnswer.size} distinct answers, ${groups.length} distinct (rpc, protocol, answer)`);
  let answerNo = 0;
  for (const [answer, gs] of [...byAnswer.entries()].sort((a, b) => b[1].reduce((x, g) => x + g.count, 0) - a[1].reduce((x, g) => x + g.count, 0))) {
    answerNo++;
    const total = gs.reduce((a, g) => a + g.count, 0);
    const families = new Set(gs.flatMap((g) => [...g.families]));
    out.push(
      "",
      `  ${answerNo}. ${answer}: ${total}×`,
      `     protocols: ${countBy(gs, (g) => g.first.protocol, (g) => g.count)}`,
      `     rpcs: ${countBy(gs, (g) => g.first.rpc, (g) => g.count)}`,
      `     inputs: ${[...families].join(", ")}`,
    );
    // Reproductions: prefer distinct protocols, and cases small enough for curl.
    const picks: Group[] = [];
    const seen = new Set<string>();
    for (const g of [...gs].sort((a, b) => (curlLine(buildCase(seed, a.first.index, pools)) ? 0 : 1) - (curlLine(buildCase(seed, b.first.index, pools)) ? 0 : 1))) {
      if (picks.length >= reproductions) break;
      if (seen.has(g.first.protocol)) continue;
      seen.add(g.first.protocol);
      picks.push(g);
    }
    for (const g of picks) {
      const e = g.first;
      out.push(`     reproduce (case ${e.index}, ${e.rpc} over ${e.protocol}: ${e.description}):`, `       npm run fuzz -- --seed ${seed} --replay ${e.index}`);
      const curl = curlLine(buildCase(seed, e.index, pools));
      if (curl) out.push(`       ${curl}`);
    }
    out.push("     every distinct case (rpc, protocol: count, example case, input; answer when sent alone):");
    for (const g of gs.sort((a, b) => a.key.localeCompare(b.key))) {
      const e = g.first;
      const alone = withAlone && g.alone ? `; alone: ${g.alone.code === e.outcome.code ? "same" : g.alone.code}` : "";
      out.push(`       ${e.rpc}, ${e.protocol}: ${g.count}×, case ${e.index}: ${e.description} [${e.outcome.via}${e.outcome.httpStatus ? ` ${e.outcome.httpStatus}` : ""}${alone}]`);
    }
  }
  return out;
}

export function renderFailures(r: Runner, pools: Pools): string {
  const groups = [...r.failures.values()];
  if (groups.length === 0) return "distinct failures: none";
  return groupLines(groups, r.seed, pools, "distinct failures (INTERNAL, UNKNOWN or bare 5xx)", true).join("\n");
}

export function renderAnomalies(r: Runner, pools: Pools, max = 15): string {
  const all = r.anomalies();
  const groups = [...all.values()].sort((a, b) => b.count - a.count).slice(0, max);
  if (groups.length === 0) return "other anomalies (not targets): none";
  const lines = groupLines(groups, r.seed, pools, "other anomalies (not targets: no status, resets, hangs on complete requests)", false);
  if (all.size > max) lines.push(`  … ${all.size - max} more distinct anomalies`);
  return lines.join("\n");
}

export function renderCrashes(r: Runner): string {
  if (r.crashes.length === 0) return "broker crashes: none";
  const out = [`broker crashes: ${r.crashes.length}`];
  for (const c of r.crashes) {
    out.push(`  exit ${c.exit} at ${new Date(c.at).toISOString()}; cases in flight: ${c.inFlight.map((x) => `${x.index} (${x.rpc.name} over ${x.protocol.name}: ${x.description})`).join("; ")}`);
    out.push(
      c.culprits === null
        ? "  the cases in flight were not sent again alone"
        : c.culprits.length > 0
          ? `  sent again alone, these crash the broker by themselves: ${c.culprits.map((i) => `case ${i} (npm run fuzz -- --seed ${r.seed} --replay ${i})`).join(", ")}`
          : "  sent again alone, none of the cases in flight crashes the broker by itself",
    );
    for (const l of c.stderr.slice(-12)) out.push(`    | ${l}`);
  }
  return out.join("\n");
}

export function renderStuck(s: StuckResult | null): string {
  if (!s) return "stuck jobs: not checked";
  const out = [
    `stuck jobs: ${s.expiredRunning.length} RUNNING with a lease expired over 5 s ago, ${s.undelivered.length} due AVAILABLE never delivered ` +
      `(drained ${s.drainedQueues} queue(s); final states: ${Object.entries(s.countsByState).map(([k, v]) => `${k} ${v}`).join(", ")}; ${s.longLeases} RUNNING with leases over 1 h)`,
  ];
  out.push(
    s.reaperMs === null
      ? "  reaper probe: a fresh job's 1 s lease was NOT reclaimed within 10 s (counted as one stuck job): the reaper is blocked"
      : `  reaper probe: a fresh job's 1 s lease was reclaimed ${(s.reaperMs / 1000).toFixed(1)} s after it was leased`,
  );
  for (const j of s.expiredRunning.slice(0, 8)) out.push(`  job ${j.id} (${j.queue}): RUNNING, attempt ${j.attempt}, lease expired ${j.expiredS.toFixed(1)} s ago, retry ${JSON.stringify(j.retry)}`);
  for (const j of s.undelivered.slice(0, 8)) out.push(`  job ${j.id} (${j.queue}): AVAILABLE for ${j.waitingS.toFixed(1)} s, attempt ${j.attempt}`);
  return out.join("\n");
}

export function renderHalfOpen(h: HalfOpenResult | null): string {
  if (!h) return "";
  return (
    `half-sent requests held together (issue 14 #9, informational): ${h.opened} opened (half HTTP/2 streams, half HTTP/1.1), ` +
    `${h.endedByBroker} ended by the broker within ${(h.holdMs / 1000).toFixed(0)} s; RSS ${MB(h.rssBeforeKiB)} → ${MB(h.rssHeldKiB)} while held`
  );
}
