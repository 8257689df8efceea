/**
 * Summarises V8 .cpuprofile files (from `npm run bench -- --profile`, or any
 * `node --cpu-prof`): self time by function and by package, so a profile can
 * be read without DevTools.
 *
 *   node test/bench/dist/profile-summary.js bench-results/profiles/broker-*.cpuprofile [--top 25]
 */
import { readFileSync } from "node:fs";
import path from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a frame's code lives: a package, the project's own code, or the runtime. */
export function bucket(url: string, fn: string): string {
  if (url === "") return fn === "(garbage collector)" ? "(gc)" : fn.startsWith("(") ? fn : "(native)";
  if (url.startsWith("node:")) return `node:${url.slice(5).split("/")[0]}`;
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const m = url.match(/\/(server|clients\/typescript|proto|test\/bench)\/(?:dist|gen|src)\/(.*)$/);
  if (m) return `${m[1]}/${m[2]!.split("/").slice(0, -1).join("/") || "."}`;
  return path.basename(url);
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  idleMs: number;
  byPackage: { name: string; ms: number; share: number }[];
  byFunction: { name: string; where: string; ms: number; share: number }[];
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  let total = 0;
  let idle = 0;
  const pkg = new Map<string, number>();
  const fn = new Map<string, { where: string; us: number }>();
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    total += us;
    if (cf.functionName === "(idle)") {
      idle += us;
      continue;
    }
    const b = bucket(cf.url, cf.functionName);
    pkg.set(b, (pkg.get(b) ?? 0) + us);
    const key = `${cf.functionName || "(anonymous)"} ${cf.url}:${cf.lineNumber + 1}`;
    const e = fn.get(key) ?? { where: b, us: 0 };
    e.us += us;
    fn.set(key, e);
  }
  const busy = total - idle;
  const share = (us: number) => Math.round((us / busy) * 1000) / 10;
  return {
    file,
    totalMs: Math.round(total / 1000),
    idleMs: Math.round(idle / 1000),
    byPackage: [...pkg].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({ name, ms: Math.round(us / 1000), share: share(us) })),
    byFunction: [...fn]
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, top)
      .map(([k, e]) => ({ name: k.replace(/file:\/\/\/\S*\/(node_modules|server|clients|proto)\//, "$1/"), where: e.where, ms: Math.round(e.us / 1000), share: share(e.us) })),
  };
}

function main(): void {
  // Piped into head: stop quietly when the reader goes away.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => process.exit(err.code === "EPIPE" ? 0 : 1));
  const args = process.argv.slice(2);
  const ti = args.indexOf("--top");
  const top = ti >= 0 ? Number(args.splice(ti, 2)[1]) : 20;
  if (args.length === 0) {
    process.stderr.write("usage: node profile-summary.js FILE.cpuprofile... [--top N]\n");
    process.exit(2);
  }
  for (const file of args) {
    const s = summarizeProfile(file, top);
    process.stdout.write(`\n${s.file}: ${s.totalMs} ms sampled, ${s.totalMs - s.idleMs} ms busy\n  self time by package:\n`);
    for (const r of s.byPackage) process.stdout.write(`    ${String(r.share).padStart(5)}%  ${String(r.ms).padStart(6)} ms  ${r.name}\n`);
    process.stdout.write("  self time by function:\n");
    for (const r of s.byFunction) process.stdout.write(`    ${String(r.share).padStart(5)}%  ${String(r.ms).padStart(6)} ms  ${r.name}\n`);
  }
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) main();
