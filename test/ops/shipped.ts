import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

/** The operator files this suite guards, read from deploy/. */

export const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
export const ALERTS = `${DEPLOY}prometheus/alerts.yml`;
export const ALERT_TESTS = `${DEPLOY}prometheus/alerts.test.yml`;
export const DASHBOARD = `${DEPLOY}grafana/jobwire.json`;
export const DEPLOY_README = `${DEPLOY}README.md`;

export interface AlertRule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function alertRules(): AlertRule[] {
  const doc = parseYaml(readFileSync(ALERTS, "utf8")) as { groups: { name: string; rules: AlertRule[] }[] };
  return doc.groups.flatMap((g) => g.rules);
}

export interface AlertTests {
  tests: { alert_rule_test?: { alertname: string; eval_time: string; exp_alerts?: unknown[] }[] }[];
}

export function alertTests(): AlertTests {
  return parseYaml(readFileSync(ALERT_TESTS, "utf8")) as AlertTests;
}

export interface Target {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
}

export interface Panel {
  id?: number;
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string } | null;
  gridPos?: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}

export interface TemplateVar {
  type: string;
  name: string;
  definition?: string;
  query?: string | { query?: string };
  datasource?: { type?: string; uid?: string };
}

export interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels: Panel[];
  templating: { list: TemplateVar[] };
}

export function dashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD, "utf8")) as Dashboard;
}

/** Every panel, those inside collapsed rows included. */
export function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

export function variableQuery(v: TemplateVar): string {
  return typeof v.query === "string" ? v.query : (v.query?.query ?? "");
}
