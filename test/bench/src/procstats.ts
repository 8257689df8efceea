import { readFileSync, readdirSync, writeFileSync } from "node:fs";

/**
 * CPU and memory of processes, read from /proc (Linux only). CPU is
 * utime + stime in seconds; for a parent that reaps children (the
 * postmaster) cutime + cstime is added, so backends that exited during a
 * scenario still count.
 */
const TICKS_PER_SECOND = 100; // USER_HZ; 100 on every Linux this runs on

interface StatFields {
  ppid: number;
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
}

function readStat(pid: number): StatFields | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ")".
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // f[0] is field 3 (state); field n is f[n - 3].
  return { ppid: Number(f[1]), utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) };
}

/** CPU seconds used by one process so far; 0 if it is gone. */
export function cpuSeconds(pid: number, withReapedChildren = false): number {
  const s = readStat(pid);
  if (!s) return 0;
  const ticks = s.utime + s.stime + (withReapedChildren ? s.cutime + s.cstime : 0);
  return ticks / TICKS_PER_SECOND;
}

/** CPU seconds of a postmaster and all its live children, plus those it has reaped. */
export function processTreeCpuSeconds(rootPid: number): number {
  let total = cpuSeconds(rootPid, true);
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === rootPid) continue;
    const s = readStat(pid);
    if (s && s.ppid === rootPid) total += (s.utime + s.stime) / TICKS_PER_SECOND;
  }
  return total;
}

function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export const rssMb = (pid: number): number => statusKb(pid, "VmRSS") / 1024;
export const peakRssMb = (pid: number): number => statusKb(pid, "VmHWM") / 1024;

/**
 * Resets the peak-RSS mark (VmHWM) to the current RSS, so the next read is
 * the peak of one scenario. Needs permission over the process (we spawned
 * it); returns false where the kernel does not allow it.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Busy CPU seconds of the whole machine so far, all cores (from /proc/stat), and the part stolen by the hypervisor. */
export function machineCpuSeconds(): { busy: number; steal: number } {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return { busy: (user + nice + system + irq + softirq) / TICKS_PER_SECOND, steal: steal / TICKS_PER_SECOND };
  } catch {
    return { busy: 0, steal: 0 };
  }
}

/** CPU and peak memory of the bench's processes over one measured window. */
export interface Usage {
  wallSeconds: number;
  /**
   * CPU seconds the rest of the machine used meanwhile (other sessions' test
   * runs, say): all busy time minus the bench's own processes. More than a
   * few percent of cores x wall time means the figures are noisy.
   */
  otherCpuSeconds: number;
  stealSeconds: number;
  broker: { cpuSeconds: number; peakRssMb: number } | null;
  postgres: { cpuSeconds: number };
  /** redis-server, when the system measured is BullMQ. */
  redis: { cpuSeconds: number } | null;
  workers: { cpuSeconds: number };
  producers: { cpuSeconds: number };
}

export interface Meter {
  stop(): Usage;
}

/**
 * Starts measuring: CPU deltas of each group between now and stop(), and
 * the broker's peak RSS (HWM reset here, and also sampled every 100 ms in
 * case the reset is not permitted). `workers` and `producers` return their
 * group's cumulative CPU seconds (Fleet.cpuSeconds, which remembers the
 * figure of members that have exited).
 */
export function startMeter(p: { broker?: number; postgres: number; redis?: number; workers: () => number; producers: () => number }): Meter {
  const t0 = performance.now();
  const m0 = machineCpuSeconds();
  const self0 = process.cpuUsage();
  const b0 = p.broker !== undefined ? cpuSeconds(p.broker) : 0;
  const pg0 = processTreeCpuSeconds(p.postgres);
  const r0 = p.redis !== undefined ? cpuSeconds(p.redis) : 0;
  const w0 = p.workers();
  const pr0 = p.producers();
  const hwmReset = p.broker !== undefined && resetPeakRss(p.broker);
  let rssMax = p.broker !== undefined ? rssMb(p.broker) : 0;
  const timer = setInterval(() => {
    if (p.broker !== undefined) rssMax = Math.max(rssMax, rssMb(p.broker));
  }, 100);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      let broker: Usage["broker"] = null;
      if (p.broker !== undefined) {
        rssMax = Math.max(rssMax, rssMb(p.broker));
        broker = { cpuSeconds: round(cpuSeconds(p.broker) - b0), peakRssMb: round(hwmReset ? Math.max(rssMax, peakRssMb(p.broker)) : rssMax) };
      }
      const postgres = processTreeCpuSeconds(p.postgres) - pg0;
      const redis = p.redis !== undefined ? cpuSeconds(p.redis) - r0 : 0;
      const workers = p.workers() - w0;
      const producers = p.producers() - pr0;
      const self = process.cpuUsage(self0);
      const m1 = machineCpuSeconds();
      const ours = (broker?.cpuSeconds ?? 0) + postgres + redis + workers + producers + (self.user + self.system) / 1e6;
      return {
        wallSeconds: round((performance.now() - t0) / 1000),
        otherCpuSeconds: round(Math.max(0, m1.busy - m0.busy - ours)),
        stealSeconds: round(m1.steal - m0.steal),
        broker,
        postgres: { cpuSeconds: round(postgres) },
        redis: p.redis !== undefined ? { cpuSeconds: round(redis) } : null,
        workers: { cpuSeconds: round(workers) },
        producers: { cpuSeconds: round(producers) },
      };
    },
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
