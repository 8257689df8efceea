import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { stringify as toYaml } from "yaml";
import { enqueue, uniqueQueue } from "../api/helpers.js";
import { checkSelector, exprRefs, labelsOf, labelValuesRefs, parseScrape, type Scrape } from "./promql.js";
import { ALERT_TESTS, ALERTS, DEPLOY_README, alertRules, alertTests, allPanels, dashboard, variableQuery } from "./shipped.js";

/**
 * The shipped Prometheus rules and Grafana dashboard (deploy/) against
 * promtool and against a real broker's /metrics, so that neither can drift
 * from what the broker exports.
 */

/** Added by Prometheus at scrape time, not by the broker. */
const TARGET_LABELS = new Set(["job", "instance", "pod"]);
/** Series Prometheus makes itself for each target. */
const PROMETHEUS_SERIES = new Set(["up"]);
/** Grafana's own variables. */
const GRAFANA_GLOBALS = new Set(["__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"]);

const inCI = !!process.env.CI && process.env.CI !== "false" && process.env.CI !== "0";
const promtool = (() => {
  const r = spawnSync("promtool", ["--version"], { encoding: "utf8" });
  return r.error ? { ok: false as const, why: r.error.message } : { ok: true as const, version: (r.stdout || r.stderr).split("\n")[0] };
})();

/** promtool is required in CI; on a developer's machine without it the test skips and says why. */
function needPromtool(ctx: TestContext): void {
  if (promtool.ok) return;
  const install = `apt-get install --no-install-recommends prometheus (Debian's package ships promtool)`;
  if (inCI) throw new Error(`promtool is required in CI and was not found (${promtool.why}): ${install}`);
  ctx.skip(`promtool not found (${promtool.why}); ${install} to run this check`);
}

function runPromtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync("promtool", args, { encoding: "utf8", timeout: 30_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("promtool", () => {
  it("accepts alerts.yml (promtool check rules)", (ctx) => {
    needPromtool(ctx);
    const r = runPromtool(["check", "rules", ALERTS]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain(`SUCCESS: ${alertRules().length} rules found`);
  });

  it("passes the rules' unit tests (promtool test rules)", (ctx) => {
    needPromtool(ctx);
    const r = runPromtool(["test", "rules", ALERT_TESTS]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain("SUCCESS");
  });

  it("accepts every dashboard query as PromQL", (ctx) => {
    needPromtool(ctx);
    // As recording rules, Grafana's variables replaced by what they expand to, so promtool parses each one.
    const rules = dashboardExprs().map(({ where, expr }, i) => ({
      record: `grafana:query_${i}`,
      expr: expr.replaceAll("$__rate_interval", "5m").replace(/\$\{?(\w+)\}?/g, ".*"),
      labels: { where },
    }));
    const dir = mkdtempSync(join(tmpdir(), "jobwire-ops-"));
    try {
      const file = join(dir, "dashboard-rules.yml");
      writeFileSync(file, toYaml({ groups: [{ name: "dashboard", rules }] }));
      const r = runPromtool(["check", "rules", file]);
      expect(r.status, r.output).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("alerts.yml", () => {
  const rules = alertRules();
  const alerts = rules.filter((r) => r.alert !== undefined);

  it("ships the alerts operators need", () => {
    expect(alerts.map((r) => r.alert).sort()).toEqual(
      ["JobwireDatabaseDown", "JobwireDeadJobsGrowing", "JobwireJobErrorRateHigh", "JobwireOldestWaitingClimbing", "JobwireQueueHasNoWorkers", "JobwireTargetDown"].sort(),
    );
  });

  it.each(alerts.map((r) => [r.alert!, r] as const))("%s has a for:, a severity, a summary, a description and a runbook in deploy/README.md", (name, rule) => {
    expect(rule.for, name).toMatch(/^\d+[smh]$/);
    expect(["warning", "critical"]).toContain(rule.labels?.severity);
    expect(rule.annotations?.summary).toBeTruthy();
    expect(rule.annotations?.description).toBeTruthy();
    const anchor = /#([\w-]+)$/.exec(rule.annotations?.runbook_url ?? "")?.[1];
    expect(anchor, `${name}: runbook_url ends in #${name.toLowerCase()}`).toBe(name.toLowerCase());
    expect(readFileSync(DEPLOY_README, "utf8")).toMatch(new RegExp(`^#+ ${name}$`, "m"));
  });

  it.each(alerts.map((r) => [r.alert!] as const))("%s has unit tests where it fires and where it must not", (name) => {
    const cases = alertTests().tests.flatMap((t) => t.alert_rule_test ?? []).filter((c) => c.alertname === name);
    expect(cases.some((c) => (c.exp_alerts ?? []).length > 0), `${name}: a case that fires`).toBe(true);
    expect(cases.some((c) => (c.exp_alerts ?? []).length === 0), `${name}: a case that must not fire`).toBe(true);
  });
});

describe("Grafana dashboard", () => {
  const d = dashboard();
  const panels = allPanels(d).filter((p) => p.type !== "row");
  const vars = new Map(d.templating.list.map((v) => [v.name, v]));

  it("is a Grafana 10/11 dashboard with a datasource variable and a queue variable", () => {
    expect(d.schemaVersion).toBeGreaterThanOrEqual(38);
    expect(d.uid).toMatch(/^[\w-]{1,40}$/);
    expect(d.title).toBeTruthy();
    expect(vars.get("datasource")).toMatchObject({ type: "datasource", query: "prometheus" });
    const queue = vars.get("queue");
    expect(queue?.type).toBe("query");
    expect(variableQuery(queue!)).toMatch(/^label_values\(.*, queue\)$/);
    // No hard-coded datasource: an imported dashboard must work with whatever the Prometheus is called.
    for (const v of d.templating.list.filter((v) => v.type === "query")) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template literal.
      expect(v.datasource?.uid, v.name).toBe("${datasource}");
      // Grafana shows `definition` and runs `query`: they must agree, or this suite checks one and Grafana runs the other.
      expect(v.definition, v.name).toBe(variableQuery(v));
    }
  });

  it("has unique panel ids, and panels that fit the 24-column grid", () => {
    const ids = allPanels(d).map((p) => p.id);
    expect(ids.every((id) => typeof id === "number")).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of allPanels(d)) {
      expect(p.gridPos, p.title).toBeDefined();
      expect(p.gridPos!.x + p.gridPos!.w, p.title).toBeLessThanOrEqual(24);
    }
  });

  it("gives every panel a Prometheus datasource through the variable, and every target an expr", () => {
    expect(panels.length).toBeGreaterThan(0);
    for (const p of panels) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template literal.
      expect(p.datasource, p.title).toEqual({ type: "prometheus", uid: "${datasource}" });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `${p.title}: refIds`).toBe(refIds.length);
      for (const t of p.targets!) {
        expect(t.expr?.trim(), `${p.title} ${t.refId}`).toBeTruthy();
        if (t.datasource) expect(t.datasource, `${p.title} ${t.refId}`).toEqual(p.datasource);
      }
    }
  });

  it("uses only variables it defines", () => {
    for (const { where, expr } of dashboardExprs()) {
      for (const m of expr.matchAll(/\$\{?(\w+)\}?/g)) {
        expect(vars.has(m[1]!) || GRAFANA_GLOBALS.has(m[1]!), `${where}: $${m[1]} is not defined`).toBe(true);
      }
    }
  });
});

describe("the drift check itself", () => {
  const scrape = parseScrape(
    [
      "# TYPE q_jobs gauge",
      'q_jobs{queue="a",state="dead"} 1',
      "# TYPE wait_seconds histogram",
      'wait_seconds_bucket{queue="a",le="+Inf"} 2',
      'wait_seconds_sum{queue="a"} 0.5',
      'wait_seconds_count{queue="a"} 2',
      "# TYPE acked_total counter",
      "",
    ].join("\n"),
  );

  it("finds the selectors of an expression, and no function, keyword, number or string", () => {
    const { selectors, groupingLabels } = exprRefs(
      'histogram_quantile(0.99, sum by (le) (rate(wait_seconds_bucket{queue=~"$queue", x="}"}[$__rate_interval] offset 1h))) * 1e3 ' +
        'and on (job) group_left (foo) label_replace(q_jobs, "d", "$1", "s", "(.*)") unless absent(up{job="j"})',
    );
    expect(selectors).toEqual([
      { metric: "wait_seconds_bucket", matchers: [{ label: "queue", op: "=~", value: "$queue" }, { label: "x", op: "=", value: "}" }] },
      { metric: "q_jobs", matchers: [] },
      { metric: "up", matchers: [{ label: "job", op: "=", value: "j" }] },
    ]);
    expect(groupingLabels).toEqual(["le", "job", "foo"]);
  });

  it("reports names, suffixes, labels and label values the scrape does not have", () => {
    const check = (expr: string) => checkExpr("e", expr, scrape);
    expect(check('sum by (queue) (rate(wait_seconds_bucket{job="j"}[5m])) / q_jobs{state="dead"}')).toEqual([]);
    expect(check("q_job")).toEqual(["e: q_job is not exported"]);
    expect(check("wait_seconds")).toEqual(["e: wait_seconds is a histogram: select wait_seconds_bucket, _sum or _count"]);
    expect(check("q_jobs_bucket")).toEqual(["e: q_jobs_bucket: q_jobs is a gauge, which has no _bucket"]);
    expect(check("acked_total")).toEqual(["e: acked_total is declared but has no samples (run more traffic before the scrape)"]);
    expect(check('q_jobs{status="dead"}')).toEqual(["e: q_jobs has no label status"]);
    expect(check('q_jobs{state="gone"}')).toEqual(['e: q_jobs has no sample with state="gone" (has dead)']);
    expect(check("sum by (status) (q_jobs)")).toEqual(["e: groups by status, which none of q_jobs has"]);
  });
});

describe("against a real broker's /metrics", () => {
  let tb: TestBroker;
  let scrape: Scrape;

  beforeAll(async () => {
    tb = await startTestBroker();
    await traffic(tb);
    scrape = await eventually(
      async () => {
        // prom-client's GC histogram has samples only once V8 has collected; make some garbage for it.
        for (let i = 0; i < 20; i++) new Array(100_000).fill({ i });
        const s = parseScrape(await (await fetch(`${tb.url}/metrics`)).text());
        return s.samples.has("nodejs_gc_duration_seconds_count") ? s : undefined;
      },
      10_000,
      "a scrape with every metric the files use",
    );
  });
  afterAll(async () => {
    await tb?.stop();
  });

  it("exports every series alerts.yml selects, with the labels it matches and groups by", () => {
    const problems = alertRules().flatMap((r) => checkExpr(`alert ${r.alert ?? r.record}`, r.expr, scrape));
    expect(problems).toEqual([]);
  });

  it("exports every series the dashboard's panels and variables select", () => {
    const problems = dashboardExprs().flatMap(({ where, expr }) => checkExpr(where, expr, scrape));
    for (const v of dashboard().templating.list.filter((v) => v.type === "query")) {
      const ref = labelValuesRefs(variableQuery(v));
      if (!ref) {
        problems.push(`variable ${v.name}: not a label_values() query`);
        continue;
      }
      problems.push(...checkSelector(ref.selector, scrape, TARGET_LABELS).map((p) => `variable ${v.name}: ${p}`));
      if (!TARGET_LABELS.has(ref.label) && !labelsOf([ref.selector.metric], scrape).has(ref.label)) {
        problems.push(`variable ${v.name}: ${ref.selector.metric} has no label ${ref.label}`);
      }
    }
    expect(problems).toEqual([]);
  });
});

/** Every panel query, with where it is, for messages. */
function dashboardExprs(): { where: string; expr: string }[] {
  return allPanels(dashboard()).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr ?? "" })));
}

function checkExpr(where: string, expr: string, scrape: Scrape): string[] {
  const { selectors, groupingLabels } = exprRefs(expr);
  if (selectors.length === 0) return [`${where}: selects no metric`];
  const ours = selectors.filter((s) => !PROMETHEUS_SERIES.has(s.metric));
  const problems = ours.flatMap((s) => checkSelector(s, scrape, TARGET_LABELS));
  const labels = labelsOf(
    ours.map((s) => s.metric),
    scrape,
  );
  for (const l of groupingLabels) if (!TARGET_LABELS.has(l) && !labels.has(l)) problems.push(`groups by ${l}, which none of ${ours.map((s) => s.metric).join(", ")} has`);
  return problems.map((p) => `${where}: ${p}`);
}

/**
 * Enough work for every series to have samples: an ack (wait, run and
 * end-to-end times), a nack that retries, one that dead-letters, a replay
 * of that dead job, and a refused call (an RPC with a non-ok code).
 */
async function traffic(tb: TestBroker): Promise<void> {
  const queue = uniqueQueue("ops");
  await enqueue(tb, { queue }, { queue }, { queue });
  const s = new TestLeaseStream(tb.workers, { queues: [queue] });
  try {
    const [a, b, c] = await s.take(3);
    await tb.workers.ack({ leaseTokens: [a!.leaseToken] });
    await tb.workers.nack({ leaseToken: b!.leaseToken, error: "flaky" });
    await tb.workers.nack({ leaseToken: c!.leaseToken, error: "boom", permanent: true });
    await tb.admin.replay({ jobIds: [c!.job!.id] });
    const [again] = await s.take(1);
    await tb.workers.nack({ leaseToken: again!.leaseToken, error: "boom", permanent: true });
    await expect(tb.jobs.enqueue({ jobs: [{ type: "t" }] })).rejects.toThrow(/queue/);
  } finally {
    s.kill();
  }
}
