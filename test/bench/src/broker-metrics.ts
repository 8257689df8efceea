/**
 * The broker's own view of its unary calls: jobwire_rpc_duration_seconds
 * from its /metrics, read before and after a measurement. The difference of
 * the two histograms says how long the broker took over each call (from the
 * request decoded to the response handed to HTTP/2), so a slow call
 * can be split into the broker's part and the rest: the client, the wire,
 * and the scheduling of four processes on two shared cores.
 */
import http from "node:http";

export interface Histogram {
  /** Upper bounds in ms, ascending, +Inf last. */
  le: number[];
  /** Cumulative counts per bound. */
  counts: number[];
  sumMs: number;
}

/** The histogram of one method's successful calls (empty before the first); null when /metrics cannot be read. */
export async function rpcHistogram(address: string, method: string): Promise<Histogram | null> {
  let text: string;
  try {
    text = await get(`${address}/metrics`);
  } catch {
    return null;
  }
  const le: number[] = [];
  const counts: number[] = [];
  let sumMs = 0;
  const tail = `method="${method}",code="ok"}`;
  for (const line of text.split("\n")) {
    if (!line.includes(tail)) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("jobwire_rpc_duration_seconds_bucket{")) {
      const m = line.match(/le="([^"]+)"/);
      if (!m) continue;
      le.push(m[1] === "+Inf" ? Infinity : Number(m[1]) * 1000);
      counts.push(value);
    } else if (line.startsWith("jobwire_rpc_duration_seconds_sum{")) {
      sumMs = value * 1000;
    }
  }
  return { le, counts, sumMs };
}

/** after - before: the calls made in between. */
export function histogramDelta(before: Histogram, after: Histogram): Histogram {
  const counts = after.counts.map((c, i) => c - (before.counts[i] ?? 0));
  return { le: after.le, counts, sumMs: after.sumMs - before.sumMs };
}

/** The bucket bound a quantile falls under, in ms ("p50 <= 1 ms"); NaN with no calls. */
export function quantileBound(h: Histogram, q: number): number {
  const total = h.counts[h.counts.length - 1] ?? 0;
  if (total === 0) return NaN;
  const i = h.counts.findIndex((c) => c >= q * total);
  return h.le[i] ?? Infinity;
}

/** Share of the calls that took at most `ms` (a bucket bound). */
export function shareWithin(h: Histogram, ms: number): number {
  const total = h.counts[h.counts.length - 1] ?? 0;
  const i = h.le.findIndex((b) => Math.abs(b - ms) < 1e-9);
  return total === 0 || i < 0 ? NaN : h.counts[i]! / total;
}

/** One GET on a connection of its own, closed after: a kept-alive one would hold up the broker's graceful stop. */
function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { connection: "close" }, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: ${res.statusCode}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on("error", reject);
  });
}
