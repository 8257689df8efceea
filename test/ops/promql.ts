/**
 * Just enough PromQL and exposition-format reading to check that the
 * shipped alerts and dashboard name series the broker really exports. Not a
 * PromQL parser: promtool checks the syntax; this finds the selectors.
 */

export interface Matcher {
  label: string;
  op: "=" | "!=" | "=~" | "!~";
  value: string;
}

export interface Selector {
  metric: string;
  matchers: Matcher[];
}

export interface ExprRefs {
  selectors: Selector[];
  /** Labels named in by/without/on/ignoring/group_left/group_right clauses. */
  groupingLabels: string[];
}

/** Words that are not metric names where an identifier may stand. */
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2"]);
const STRING = String.raw`"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|\x60[^\x60]*\x60`;
const BRACES = new RegExp(String.raw`\{((?:${STRING}|[^{}"'\x60])*)\}`, "g");
const MATCHER = new RegExp(String.raw`\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*(${STRING})\s*,?`, "gy");
const GROUPING = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g;

export function exprRefs(expr: string): ExprRefs {
  const blocks: Matcher[][] = [];
  // Label matchers first (their values may hold anything), each replaced by a marker "\0N\0".
  let s = expr.replace(BRACES, (_m, body: string) => {
    blocks.push(parseMatchers(body, expr));
    return `\0${blocks.length - 1}\0`;
  });
  s = s.replace(new RegExp(STRING, "g"), '""'); // label_replace arguments and the like
  s = s.replace(/\[[^\]]*\]/g, ""); // ranges and subqueries: [5m], [$__rate_interval], [1h:1m]
  const groupingLabels: string[] = [];
  s = s.replace(GROUPING, (_m, _kw: string, labels: string) => {
    groupingLabels.push(...labels.split(",").map((l) => l.trim()).filter((l) => l !== ""));
    return " ";
  });
  const selectors: Selector[] = [];
  // An identifier not preceded by a word character, "$" or "." (numbers like 1e3, durations like 5m, Grafana's $vars).
  for (const m of s.matchAll(/(?<![\w$.:])[a-zA-Z_:][\w:]*/g)) {
    const name = m[0];
    const after = s.slice(m.index + name.length);
    if (/^\s*\(/.test(after) || KEYWORDS.has(name.toLowerCase())) continue; // a function or an operator
    const block = /^\s*\0(\d+)\0/.exec(after);
    selectors.push({ metric: name, matchers: block ? blocks[Number(block[1])]! : [] });
  }
  return { selectors, groupingLabels };
}

function parseMatchers(body: string, expr: string): Matcher[] {
  const out: Matcher[] = [];
  MATCHER.lastIndex = 0;
  let m: RegExpExecArray | null;
  while (MATCHER.lastIndex < body.length && (m = MATCHER.exec(body)) !== null) {
    out.push({ label: m[1]!, op: m[2] as Matcher["op"], value: unquote(m[3]!) });
  }
  if (body.slice(MATCHER.lastIndex).trim() !== "") throw new Error(`cannot read the label matchers {${body}} in: ${expr}`);
  return out;
}

function unquote(s: string): string {
  if (s.startsWith("`")) return s.slice(1, -1);
  return JSON.parse(s.startsWith("'") ? `"${s.slice(1, -1).replaceAll('"', '\\"')}"` : s) as string;
}

/** Grafana's label_values(metric{...}, label) variable queries. */
export function labelValuesRefs(query: string): { selector: Selector; label: string } | undefined {
  const m = /^\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$/.exec(query);
  if (!m) return undefined;
  const { selectors } = exprRefs(m[1]!);
  if (selectors.length !== 1) throw new Error(`label_values over ${selectors.length} metrics: ${query}`);
  return { selector: selectors[0]!, label: m[2]! };
}

export interface Scrape {
  /** Family name (as in "# TYPE") to type. */
  types: Map<string, string>;
  /** Sample name (with _bucket/_sum/_count) to the label sets of its samples. */
  samples: Map<string, Record<string, string>[]>;
}

/** Reads the Prometheus text exposition format. */
export function parseScrape(text: string): Scrape {
  const types = new Map<string, string>();
  const samples = new Map<string, Record<string, string>[]>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:\\.|[^"\\])*)"/g)) labels[l[1]!] = l[2]!;
    let list = samples.get(m[1]!);
    if (!list) samples.set(m[1]!, (list = []));
    list.push(labels);
  }
  return { types, samples };
}

const SUFFIXES: Record<string, string[]> = { _bucket: ["histogram"], _sum: ["histogram", "summary"], _count: ["histogram", "summary"] };

/**
 * What is wrong with `sel` against the scrape, or [] when it selects
 * samples that exist. A name with _bucket/_sum/_count must belong to a
 * histogram (or summary) family; a bare histogram name selects nothing.
 * Labels in `targetLabels` are added by Prometheus, not by the broker.
 */
export function checkSelector(sel: Selector, scrape: Scrape, targetLabels: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const declared = scrape.types.get(sel.metric);
  if (declared === "histogram" || declared === "summary") {
    problems.push(`${sel.metric} is a ${declared}: select ${sel.metric}_bucket, _sum or _count`);
  } else if (declared === undefined) {
    const suffix = Object.keys(SUFFIXES).find((s) => sel.metric.endsWith(s));
    const family = suffix ? sel.metric.slice(0, -suffix.length) : undefined;
    const familyType = family === undefined ? undefined : scrape.types.get(family);
    if (familyType === undefined) problems.push(`${sel.metric} is not exported`);
    else if (!SUFFIXES[suffix!]!.includes(familyType)) problems.push(`${sel.metric}: ${family} is a ${familyType}, which has no ${suffix}`);
  }
  const samples = scrape.samples.get(sel.metric) ?? [];
  if (problems.length === 0 && samples.length === 0) problems.push(`${sel.metric} is declared but has no samples (run more traffic before the scrape)`);
  for (const m of sel.matchers) {
    if (targetLabels.has(m.label) || samples.length === 0) continue;
    if (!samples.some((s) => m.label in s)) {
      problems.push(`${sel.metric} has no label ${m.label}`);
    } else if (m.op === "=" && !m.value.includes("$") && !samples.some((s) => s[m.label] === m.value)) {
      problems.push(`${sel.metric} has no sample with ${m.label}="${m.value}" (has ${[...new Set(samples.map((s) => s[m.label]))].join(", ")})`);
    }
  }
  return problems;
}

/** Labels of any sample of any of these metrics. */
export function labelsOf(metrics: string[], scrape: Scrape): Set<string> {
  const out = new Set<string>();
  for (const name of metrics) for (const s of scrape.samples.get(name) ?? []) for (const l of Object.keys(s)) out.add(l);
  return out;
}
