import { h, s } from "./dom.js";
import { span } from "./format.js";

/**
 * Small inline-SVG charts over the last hour (GetQueueHistory keeps 360
 * samples, one per 10 s). Drawn with DOM calls and styled by class, so the
 * CSP needs no 'unsafe-inline'. The time axis covers the last hour, or less
 * when the broker has sampled for less (a broker up for five minutes draws
 * its five minutes across the whole width, and says so).
 */
export interface Series {
  /** One value per point; same length as `at`. */
  values: number[];
  cls: string;
  label: string;
  area?: boolean;
  /** What the legend shows: the last value (a level, like backlog) or the sum (a rate, like throughput). */
  legend: "last" | "sum";
}

const W = 150;
const H = 40;
const PAD = 2;
export const WINDOW_MS = 3600_000;
/** The shortest axis drawn, so that the first samples do not fill the chart edge to edge. */
const MIN_WINDOW_MS = 5 * 60_000;

export function chart(opts: { title: string; at: number[]; series: Series[]; unit: string; now?: number; test?: string }): HTMLElement {
  const now = opts.now ?? Date.now();
  const first = opts.at[0] ?? now;
  const windowMs = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, now - first));
  const from = now - windowMs;
  const inWindow = opts.at.map((t) => t >= from);
  const max = Math.max(1, ...opts.series.flatMap((x) => x.values.filter((_, i) => inWindow[i])));
  const x = (t: number) => PAD + ((Math.max(from, t) - from) / windowMs) * (W - 2 * PAD);
  const y = (v: number) => H - PAD - (v / max) * (H - 2 * PAD);
  const period = `last ${windowMs >= WINDOW_MS ? "hour" : span(windowMs / 1000)}`;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart", role: "img", "aria-label": `${opts.title}, ${period}` },
    s("title", null, `${opts.title}, ${period}: peak ${max.toLocaleString("en-US")} ${opts.unit}`),
    s("line", { x1: PAD, x2: W - PAD, y1: H - PAD, y2: H - PAD, class: "axis" }),
  );
  const pts = opts.at.map((t, i) => ({ t, i })).filter((p) => inWindow[p.i]);
  for (const ser of opts.series) {
    if (pts.length === 0) continue;
    const xy = pts.map((p) => `${x(p.t).toFixed(1)},${y(ser.values[p.i] ?? 0).toFixed(1)}`);
    // One sample is a point: draw it as a short tick so that it shows.
    if (xy.length === 1) xy.unshift(`${(x(pts[0]!.t) - 2).toFixed(1)},${y(ser.values[pts[0]!.i] ?? 0).toFixed(1)}`);
    if (ser.area) {
      const x0 = xy[0]!.split(",")[0];
      const x1 = xy[xy.length - 1]!.split(",")[0];
      svg.appendChild(s("path", { d: `M${x0},${H - PAD} L${xy.join(" L")} L${x1},${H - PAD} Z`, class: `area ${ser.cls}` }));
    }
    svg.appendChild(s("polyline", { points: xy.join(" "), class: `line ${ser.cls}` }));
  }
  const value = (ser: Series) => {
    const vs = pts.map((p) => ser.values[p.i] ?? 0);
    return ser.legend === "sum" ? vs.reduce((a, b) => a + b, 0) : (vs.at(-1) ?? 0);
  };
  const legend = h(
    "div",
    { class: "chart-legend" },
    h("span", { class: "chart-title", title: period }, opts.title),
    opts.series.map((ser) => h("span", { class: `key ${ser.cls}` }, `${ser.label} ${value(ser).toLocaleString("en-US")}`)),
  );
  return h("figure", { class: "chart-box", "data-test": opts.test ?? null, "data-points": pts.length }, svg, legend);
}
