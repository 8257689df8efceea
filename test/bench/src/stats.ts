/** Summaries of samples. Percentiles are nearest-rank on the sorted samples. */

export interface Summary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(values: ArrayLike<number>): Summary {
  const a = Float64Array.from(values).sort();
  const n = a.length;
  if (n === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const rank = (p: number) => a[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]!;
  let sum = 0;
  for (const v of a) sum += v;
  return { count: n, p50: r3(rank(0.5)), p90: r3(rank(0.9)), p99: r3(rank(0.99)), max: r3(a[n - 1]!), mean: r3(sum / n) };
}

const r3 = (v: number) => Math.round(v * 1000) / 1000;

export const fmtInt = (n: number): string => Math.round(n).toLocaleString("en-US");
export const fmtMs = (ms: number): string => `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
export const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}x` : "n/a");
