import type { JobState } from "./types.js";

/** int64 fields arrive as strings ("12"), and zero ones not at all. */
export function count(v: string | number | undefined): number {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export function num(v: string | number | undefined): string {
  return count(v).toLocaleString("en-US");
}

/** A proto Duration in JSON ("12.500s") as seconds. */
export function seconds(d: string | undefined): number {
  if (!d) return 0;
  const n = parseFloat(d);
  return Number.isFinite(n) ? n : 0;
}

export function span(s: number): string {
  if (s <= 0) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/** "2026-12-04 17:02:11" in the viewer's time zone. */
export function time(iso: string | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** "3 min ago" or "in 20 s". */
export function relative(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return "";
  const s = (t - now) / 1000;
  if (Math.abs(s) < 1) return "now";
  return s < 0 ? `${span(-s)} ago` : `in ${span(s)}`;
}

export function stateName(s: JobState | undefined): string {
  return (s ?? "JOB_STATE_UNSPECIFIED").replace("JOB_STATE_", "").toLowerCase();
}

export function fromBase64(b64: string | undefined): Uint8Array {
  if (!b64) return new Uint8Array(0);
  const bin = atob(b64.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** 16 bytes a line: offset, hex, and the printable ASCII beside it. */
export function hexdump(bytes: Uint8Array, max = 4096): string {
  const lines: string[] = [];
  const n = Math.min(bytes.length, max);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (bytes.length > n) lines.push(`… ${(bytes.length - n).toLocaleString("en-US")} more bytes`);
  return lines.join("\n");
}

export interface Rendered {
  kind: "json" | "text" | "hex" | "empty";
  text: string;
}

/**
 * A payload for people: pretty JSON when it parses as JSON (whatever the
 * content type claims, since most producers leave the default), UTF-8 text
 * for text/* types, and a hex dump for anything else.
 */
export function renderPayload(b64: string | undefined, contentType: string | undefined): Rendered {
  const bytes = fromBase64(b64);
  if (bytes.length === 0) return { kind: "empty", text: "" };
  let text: string | null = null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = null;
  }
  const ct = (contentType || "application/json").toLowerCase();
  if (text !== null && (ct.includes("json") || /^\s*[[{"]/.test(text))) {
    try {
      return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {
      // not JSON after all
    }
  }
  if (text !== null && (ct.startsWith("text/") || ct.includes("xml") || ct.includes("yaml"))) return { kind: "text", text };
  return { kind: "hex", text: hexdump(bytes) };
}

/** The trace id of a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"), or "". */
export function traceId(traceparent: string | undefined): string {
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/.exec((traceparent ?? "").trim().toLowerCase());
  return m && !/^0+$/.test(m[1]!) ? m[1]! : "";
}

/** The configured link for a trace, only when it is an http(s) URL. */
export function traceLink(template: string, id: string): string {
  if (!template || !id) return "";
  const url = template.split("{trace_id}").join(encodeURIComponent(id));
  return /^https?:\/\//i.test(url) ? url : "";
}
