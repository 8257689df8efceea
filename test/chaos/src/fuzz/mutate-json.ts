/**
 * Mutations of valid JSON requests (Connect JSON, gRPC+JSON): broken
 * syntax, wrong types, numbers no type can hold, durations and timestamps
 * out of range or before 4713 BC, NULs and lone surrogates, deep nesting,
 * huge strings, unknown and duplicate fields.
 */
import type { Rng } from "../common/rng.js";

const EXTREMES: unknown[] = [
  // biome-ignore lint/correctness/noPrecisionLoss: numbers no type can hold are the point.
  1e400,
  // biome-ignore lint/correctness/noPrecisionLoss: as above.
  -1e400,
  // biome-ignore lint/correctness/noPrecisionLoss: 2^64, one past uint64.
  18446744073709551616,
  "18446744073709551616",
  "-9223372036854775809",
  "9223372036854775808",
  1.5,
  -0,
  "NaN",
  "Infinity",
  true,
  null,
  [],
  {},
  "",
  "\u0000",
  "a\u0000b",
  "x".repeat(70_000),
  "315576000001s",
  "-1s",
  "1.0000000001s",
  "99999999999999999999s",
  "2592000s",
  "s",
  "-4714-11-24T00:00:00Z",
  "0000-01-01T00:00:00Z",
  "10000-01-01T00:00:00Z",
  "2026-13-01T00:00:00Z",
  "2026-01-01T00:00:00+99:00",
  "JOB_STATE_NOPE",
];

type JsonMutator = (text: string, rng: Rng) => [string, string];

function keysOf(v: unknown, prefix = "", out: { path: string; parent: Record<string, unknown>; key: string }[] = []) {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, child] of Object.entries(v as Record<string, unknown>)) {
      out.push({ path: prefix + k, parent: v as Record<string, unknown>, key: k });
      keysOf(child, `${prefix}${k}.`, out);
    }
  } else if (Array.isArray(v)) v.forEach((c, i) => keysOf(c, `${prefix}${i}.`, out));
  return out;
}

function show(v: unknown): string {
  const s = typeof v === "number" && !Number.isFinite(v) ? String(v) : JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 16)}… (${s.length} chars)` : s;
}

const MUTATORS: Record<string, JsonMutator> = {
  "broken syntax": (t, rng) => {
    const kind = rng.int(6);
    if (kind === 0) return [t.slice(0, rng.int(t.length)), "cut short"];
    if (kind === 1) return [t.replace(/"/, ""), "a quote removed"];
    if (kind === 2) return [t.replace(/}$/, ",}"), "trailing comma"];
    if (kind === 3) return [`${t}${t}`, "two documents"];
    if (kind === 4) return [t.replace(/"(\w+)":/, "$1:"), "unquoted key"];
    return [`\ufeff${t}`, "byte-order mark first"];
  },
  "extreme value": (t, rng) => {
    const doc = JSON.parse(t) as unknown;
    const keys = keysOf(doc);
    const v = rng.pick(EXTREMES);
    if (keys.length === 0 || !doc || typeof doc !== "object") return [JSON.stringify({ [rng.pick(["queue", "id", "jobs", "leaseTokens"])]: v }), `top-level field = ${show(v)}`];
    const k = rng.pick(keys);
    k.parent[k.key] = v;
    // JSON.stringify cannot write 1e400 or NaN: splice the literal in.
    const text = JSON.stringify(doc, (_key, val) => (typeof val === "number" && !Number.isFinite(val) ? "__NUM__" : val)).replace('"__NUM__"', rng.pick(["1e400", "-1e400", "NaN"]));
    return [text, `${k.path} = ${show(v)}`];
  },
  "wrong type": (t, rng) => {
    const doc = JSON.parse(t) as unknown;
    const keys = keysOf(doc);
    if (keys.length === 0) return [rng.pick(["[]", "1", '"x"', "null", "true"]), "not an object"];
    const k = rng.pick(keys);
    const cur = k.parent[k.key];
    const v = Array.isArray(cur) ? { 0: cur[0] } : typeof cur === "string" ? [cur] : typeof cur === "number" ? String(cur) : typeof cur === "object" ? "obj" : { v: cur };
    k.parent[k.key] = v;
    return [JSON.stringify(doc), `${k.path} as ${Array.isArray(v) ? "an array" : typeof v}`];
  },
  "deep nesting": (_t, rng) => {
    const depth = rng.pick([1000, 100_000]);
    const open = rng.bool() ? "[" : '{"a":';
    return [`{"jobs":${open.repeat(depth)}`, `${depth} levels of ${open}`];
  },
  "unknown and duplicate fields": (t, rng) => {
    if (!t.startsWith("{")) return [t, "not an object"];
    const extra = rng.pick(['"nope":1,', '"@type":"x",', '"queue":"a","queue":"b",', '"__proto__":{"x":1},', '"constructor":{"prototype":{}},']);
    return [`{${extra}${t.slice(1)}`, `prefixed ${extra}`];
  },
  "escapes": (t, rng) => {
    const esc = rng.pick(["\\u0000", "\\ud800", "\\udfff\\ud800", "\\u202e", "\\\\\\\""]);
    return [t.replace(/"([^"\\]*)"(?=\s*[,}\]])/, `"$1${esc}"`), `a string value gets ${esc}`];
  },
  "not utf-8": (t) => [Buffer.concat([Buffer.from(t.slice(0, 5)), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from(t.slice(5))]).toString("latin1"), "invalid UTF-8 bytes inside"],
};

export const JSON_MUTATIONS = Object.keys(MUTATORS);

/** Returns the mutated JSON bytes (latin1 for "not utf-8", so raw bytes survive). */
export function mutateJson(text: string, rng: Rng): [Uint8Array, string] {
  const name = rng.pick(JSON_MUTATIONS);
  let out: string;
  let what: string;
  try {
    [out, what] = MUTATORS[name]!(text, rng);
  } catch {
    [out, what] = [text.slice(0, -1), "cut short"];
  }
  const bytes = name === "not utf-8" ? Buffer.from(out, "latin1") : Buffer.from(out, "utf8");
  return [bytes, `${name}: ${what}`];
}
