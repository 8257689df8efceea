/// <reference lib="dom" />
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Config } from "@jobwire/server";
import { makeJob, makeJobs, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import type { Page } from "puppeteer-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { httpRoutes } from "../../server/src/transport/http.js";
import { silentLogger } from "../../server/src/log.js";
import { ADMIN, BILLING, READER, startAuthBroker, whoAmI, type AuthBroker } from "./auth-fixtures.js";
import { clickAndConfirm, launch, openPage, shot, textOf, waitForText, type LaunchedBrowser, type Watch } from "./browser.js";
import { deadJob, stateOf, TRACE_ID, TRACEPARENT, uniqueQueue } from "./fixtures.js";

/**
 * The dashboard in a real headless Chromium against a real broker and
 * Postgres: a person's paths through it (Queues -> a dead job -> its
 * errors -> replay; filters and pages; pause and resume; workers), with
 * the CSP in force and nothing fetched from outside the broker's origin.
 * Screenshots go to test-results/dashboard/.
 */

const TRACE_URL = "http://localhost:16686/trace/{trace_id}";

let chromium: LaunchedBrowser;
beforeAll(async () => {
  chromium = await launch();
});
afterAll(async () => {
  await chromium?.close();
});

/** Pages opened by a test, checked and closed after it. */
const opened: { page: Page; watch: Watch; origin: string }[] = [];
async function open(tb: TestBroker, hash = "#/queues"): Promise<{ page: Page; watch: Watch }> {
  const origin = new URL(tb.url).origin;
  const p = await openPage(chromium.browser, origin);
  opened.push({ ...p, origin });
  await p.page.goto(`${tb.url}/${hash}`, { waitUntil: "load" });
  return p;
}
afterEach(async (ctx) => {
  for (const { page, watch } of opened.splice(0)) {
    if (ctx.task.result?.state === "fail") {
      // What the page showed when the test failed, for the report and the screenshot folder.
      await shot(page, `failed-${ctx.task.name.replace(/\W+/g, "-").slice(0, 60)}`).catch(() => {});
      // innerText: the text as shown, which is what the report is for.
      // biome-ignore lint/performance/useDomNodeTextContent: see above.
      const text = await page.$eval("body", (b) => b.innerText).catch(() => "?");
      console.log(`page at failure (${page.url()}):\n${text.slice(0, 3000)}\nrequests:\n${watch.requests.join("\n")}`);
    }
    await page.close().catch(() => {});
    expect(watch.cspViolations, "CSP violations").toEqual([]);
    expect(watch.pageErrors, "uncaught errors in the page").toEqual([]);
    expect(watch.foreignRequests, "requests outside the broker's origin").toEqual([]);
    expect(watch.consoleErrors, "console errors").toEqual([]);
  }
});

describe("the dashboard, auth off", () => {
  let tb: TestBroker;
  beforeAll(async () => {
    // traceUrl is JOBWIRE_TRACE_URL; a broker that does not know it yet serves "" (the test below says which).
    tb = await startTestBroker({ traceUrl: TRACE_URL } as Partial<Config>);
  });
  afterAll(async () => {
    await tb?.stop();
  });

  it("serves the built bundle with a strict CSP, framing refused, and no CORS", async () => {
    const index = await fetch(`${tb.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toContain("text/html");
    const html = await index.text();
    const csp = index.headers.get("content-security-policy") ?? "";
    for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"]) {
      expect(csp).toContain(d);
    }
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).not.toContain("unsafe-eval");
    expect(index.headers.get("x-frame-options")).toBe("DENY");
    expect(index.headers.get("x-content-type-options")).toBe("nosniff");
    expect(index.headers.get("referrer-policy")).toBe("no-referrer");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    // No inline script or style in the page itself, and every asset is local.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style|style=/);
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThanOrEqual(3);
    for (const a of assets) {
      expect(a.startsWith("/assets/"), a).toBe(true);
      const res = await fetch(tb.url + a);
      expect(res.status, a).toBe(200);
      expect(res.headers.get("cache-control")).toContain("immutable");
      expect(res.headers.get("content-security-policy")).toBe(csp);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    }
    const types = await Promise.all(assets.map(async (a) => (await fetch(tb.url + a)).headers.get("content-type")));
    expect(types.some((t) => t?.startsWith("text/javascript"))).toBe(true);
    expect(types.some((t) => t?.startsWith("text/css"))).toBe(true);
    const head = await fetch(`${tb.url}/`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const etag = index.headers.get("etag")!;
    expect((await fetch(`${tb.url}/`, { headers: { "if-none-match": etag } })).status).toBe(304);
    expect((await fetch(`${tb.url}/assets/nope-12345678.js`)).status).toBe(404);
    expect((await fetch(`${tb.url}/assets/../package.json`)).status).toBe(404);

    const cfg = await fetch(`${tb.url}/dashboard/config.json`);
    expect(cfg.headers.get("content-type")).toContain("application/json");
    expect(cfg.headers.get("content-security-policy")).toBe(csp);
    const body = (await cfg.json()) as { authEnabled: unknown; traceUrl: unknown };
    expect(body.authEnabled).toBe(false);
    expect(typeof body.traceUrl).toBe("string");

    // Cross-site protection: RPCs take JSON only (a form's text/plain is refused), and no answer carries CORS headers.
    const evil = { origin: "http://evil.example" };
    const plain = await fetch(`${tb.url}/jobwire.v1.AdminService/Replay`, {
      method: "POST",
      headers: { ...evil, "content-type": "text/plain" },
      body: JSON.stringify({ filter: { queue: "x" } }),
    });
    expect(plain.status).toBe(415);
    const preflight = await fetch(`${tb.url}/jobwire.v1.AdminService/Replay`, {
      method: "OPTIONS",
      headers: { ...evil, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    const json = await fetch(`${tb.url}/jobwire.v1.AdminService/GetQueueStats`, {
      method: "POST",
      headers: { ...evil, "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    for (const res of [plain, preflight, json, index, cfg]) {
      expect(res.headers.get("access-control-allow-origin")).toBeNull();
      expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    }
  });

  it("takes a person from the Queues page to a dead job, its error history, and a replay", async () => {
    const queue = uniqueQueue("emails");
    const id = await deadJob(tb, queue, "SMTP 550: mailbox unavailable", {
      payload: { to: "ada@example.com", template: "welcome" },
      headers: { traceparent: TRACEPARENT, tenant: "acme" },
    });
    await makeJobs(tb.db, 3, { queue, state: "available" });
    // A second dead job with a long history: the broker kept 3 of 7 errors and counted the rest.
    const long = await makeJob(tb.db, {
      queue,
      state: "dead",
      type: "send-email",
      attempt: 7,
      maxAttempts: 7,
      payload: new Uint8Array([0, 1, 2, 0xff, 0xfe]),
      errors: [
        { attempt: 1, message: "connection refused", workerId: "w-1" },
        { attempt: 6, message: "timeout after 30s", workerId: "w-2" },
        { attempt: 7, message: "timeout after 30s\n  at send (mailer.js:12)", workerId: "w-2" },
      ],
      errorsDropped: 4,
    });

    const { page } = await open(tb, "#/queues");
    await page.waitForSelector(`tr[data-queue="${queue}"]`);
    const row = `tr[data-queue="${queue}"]`;
    await waitForText(page, `${row} td.dead`, "2");
    await waitForText(page, row, "3"); // available
    await shot(page, "01-queues");

    // Queues -> the queue's dead jobs.
    await page.locator(`${row} [data-test=count-dead]`).click();
    await page.waitForSelector(`tr[data-job-id="${id}"]`);
    expect(page.url()).toContain(`queue=${queue}`);
    expect(page.url()).toContain("state=dead");
    await waitForText(page, `tr[data-job-id="${id}"]`, "SMTP 550");
    expect(await page.$$eval("table.jobs tbody tr", (rs) => rs.length)).toBe(2);
    await shot(page, "02-dead-jobs");

    // -> the long history first: the dropped errors are said, where they were dropped.
    await page.goto(`${tb.url}/#/jobs/${long.id}`);
    await page.waitForSelector("[data-test=errors]");
    await waitForText(page, "[data-test=errors-dropped]", "4 error(s) were dropped");
    await waitForText(page, "[data-test=errors] h3", "Errors (7)");
    expect(await page.$$eval("[data-test=error-row]", (rs) => rs.length)).toBe(3);
    await waitForText(page, "tr.gap", "4 error(s) dropped here");
    await waitForText(page, "[data-test=errors]", "at send (mailer.js:12)");
    await waitForText(page, "[data-test=payload]", "00000000  00 01 02 ff fe");
    await shot(page, "03-job-long-history");

    // -> the real dead job: its error, payload, headers and trace.
    await page.goto(`${tb.url}/#/jobs/${id}`);
    await page.waitForSelector("[data-test=error-row]");
    await waitForText(page, "[data-test=error-row]", "SMTP 550: mailbox unavailable");
    await waitForText(page, "[data-test=error-row]", "fixture-worker");
    await waitForText(page, "[data-test=payload]", '"template": "welcome"');
    await waitForText(page, "[data-test=trace]", TRACE_ID);
    await waitForText(page, "main", "tenant");
    const traceUrl = ((await (await fetch(`${tb.url}/dashboard/config.json`)).json()) as { traceUrl: string }).traceUrl;
    if (traceUrl) {
      const href = await page.$eval("[data-test=trace-link]", (a) => a.getAttribute("href"));
      expect(href).toBe(`http://localhost:16686/trace/${TRACE_ID}`);
      expect(await page.$eval("[data-test=trace-link]", (a) => a.getAttribute("rel"))).toContain("noreferrer");
    } else {
      expect(await page.$("[data-test=trace-link]")).toBeNull();
    }
    await shot(page, "04-job-dead");

    // Replay, with a confirmation and a report; the job is available again in the database.
    await page.locator("[data-test=replay]").click();
    await page.waitForSelector("dialog[open]");
    await waitForText(page, "dialog[open]", `Replay job ${id}?`);
    await shot(page, "05-replay-confirm");
    await page.locator("dialog[open] [data-test=confirm-ok]").click();
    await waitForText(page, "[data-test=toast-ok]", `Replayed job ${id}.`);
    expect(await stateOf(tb, id)).toBe("available");
    await waitForText(page, ".job-head .badge", "available");
    // The error history survives the replay.
    await waitForText(page, "[data-test=error-row]", "SMTP 550");
    await shot(page, "06-replayed");
  });

  it("cancels nothing without a yes, and cancels a waiting job with one", async () => {
    const queue = uniqueQueue("cancel");
    const { id } = await makeJob(tb.db, { queue, state: "available" });
    const { page } = await open(tb, `#/jobs/${id}`);
    await page.locator("[data-test=cancel]").click();
    await page.locator("dialog[open] [data-test=confirm-cancel]").click();
    await page.waitForSelector("dialog[open]", { hidden: true });
    expect(await stateOf(tb, id)).toBe("available");
    await clickAndConfirm(page, "[data-test=cancel]");
    await waitForText(page, "[data-test=toast-ok]", `Cancelled job ${id}.`);
    expect(await stateOf(tb, id)).toBe("cancelled");
    await waitForText(page, ".job-head .badge", "cancelled");
  });

  it("filters by queue, state, type and error text, and pages through with next and previous", async () => {
    const queue = uniqueQueue("pages");
    await makeJobs(tb.db, 55, { queue, state: "available", type: "resize" });
    for (let i = 0; i < 4; i++) await makeJob(tb.db, { queue, state: "dead", type: "resize", attempt: 1, errors: [{ attempt: 1, message: `disk full on /dev/sd${i}` }] });
    for (let i = 0; i < 3; i++) await makeJob(tb.db, { queue, state: "dead", type: "thumbnail", attempt: 1, errors: [{ attempt: 1, message: "timeout" }] });
    const { rows } = await tb.db.query<{ id: string }>("SELECT id::text AS id FROM jobwire.jobs WHERE queue = $1 ORDER BY jobs.id DESC", [queue]);
    const all = rows.map((r) => r.id);
    expect(all).toHaveLength(62);

    const { page } = await open(tb, "#/jobs");
    await page.waitForSelector("[data-test=filters]");
    await page.type("[data-test=filters] input[name=queue]", queue);
    await page.select("[data-test=filters] select[name=size]", "25");
    await page.waitForFunction((q: string) => location.hash.includes(`queue=${q}`) && location.hash.includes("size=25"), {}, queue);
    const ids = () => page.$$eval("table.jobs tbody tr[data-job-id]", (rs) => rs.map((r) => r.getAttribute("data-job-id")!));
    const settle = async (first: string) => page.waitForSelector(`table.jobs tbody tr[data-job-id="${first}"]`);

    await settle(all[0]!);
    expect(await ids()).toEqual(all.slice(0, 25));
    await waitForText(page, "[data-test=page-info]", "page 1: jobs 1–25");
    await shot(page, "07-jobs-page-1");
    await page.locator("[data-test=next]").click();
    await settle(all[25]!);
    expect(await ids()).toEqual(all.slice(25, 50));
    await waitForText(page, "[data-test=page-info]", "page 2: jobs 26–50");
    await page.locator("[data-test=next]").click();
    await settle(all[50]!);
    expect(await ids()).toEqual(all.slice(50, 62));
    expect(await page.$("[data-test=next]")).toBeNull(); // the last page
    await shot(page, "08-jobs-page-3");
    await page.locator("[data-test=prev]").click();
    await settle(all[25]!);
    expect(await ids()).toEqual(all.slice(25, 50));
    // The browser's back button goes back a page too: the pages live in the URL.
    await page.goBack();
    await settle(all[50]!);
    expect(await ids()).toEqual(all.slice(50, 62));

    // State and error text: the four "disk full" dead jobs.
    await page.select("[data-test=filters] select[name=state]", "dead");
    await page.waitForFunction(() => location.hash.includes("state=dead"));
    await page.type("[data-test=filters] input[name=error]", "disk full");
    await page.locator("[data-test=filters] button[type=submit]").click();
    await page.waitForFunction(() => location.hash.includes("error=disk"));
    await page.waitForFunction(() => document.querySelectorAll("table.jobs tbody tr[data-job-id]").length === 4);
    await waitForText(page, "table.jobs tbody", "disk full on /dev/sd3");
    expect(await textOf(page, "table.jobs tbody")).not.toContain("timeout");
    await shot(page, "09-jobs-filtered");

    // Type: the three thumbnail jobs (error text cleared).
    await page.$eval("[data-test=filters] input[name=error]", (el) => ((el as HTMLInputElement).value = ""));
    await page.type("[data-test=filters] input[name=type]", "thumbnail");
    await page.locator("[data-test=filters] button[type=submit]").click();
    await page.waitForFunction(() => location.hash.includes("type=thumbnail"));
    await page.waitForFunction(() => document.querySelectorAll("table.jobs tbody tr[data-job-id]").length === 3);
    expect(await page.$$eval("table.jobs tbody tr td:nth-child(3)", (tds) => [...new Set(tds.map((t) => t.textContent))])).toEqual(["thumbnail"]);

    // Replay by filter: a dry run counts them for the dialog, then the three come back.
    await page.locator("[data-test=replay-matching]").click();
    await waitForText(page, "dialog[open]", "Replay 3 dead job(s)");
    await shot(page, "10-replay-matching");
    await page.locator("dialog[open] [data-test=confirm-ok]").click();
    await waitForText(page, "[data-test=toast-ok]", "Replayed 3 job(s).");
    const { rows: after } = await tb.db.query<{ type: string; state: string; n: number }>(
      "SELECT type, state::text, count(*)::int AS n FROM jobwire.jobs WHERE queue = $1 AND type <> 'resize' GROUP BY 1, 2",
      [queue],
    );
    expect(after).toEqual([{ type: "thumbnail", state: "available", n: 3 }]);
  });

  it("pauses and resumes a queue from its button", async () => {
    const queue = uniqueQueue("pausable");
    await makeJobs(tb.db, 2, { queue, state: "available" });
    const paused = async () => (await tb.admin.getQueueStats({ queues: [queue] })).queues[0]?.paused;
    const { page } = await open(tb, "#/queues");
    const row = `tr[data-queue="${queue}"]`;
    await clickAndConfirm(page, `${row} [data-test=pause]`);
    await waitForText(page, "[data-test=toast-ok]", `Paused ${queue}.`);
    await page.waitForSelector(`${row} .badge.paused`);
    await page.waitForSelector(`${row} [data-test=resume]`);
    expect(await paused()).toBe(true);
    await shot(page, "11-paused");
    await clickAndConfirm(page, `${row} [data-test=resume]`);
    await waitForText(page, "[data-test=toast-ok]", `Resumed ${queue}.`);
    await page.waitForSelector(`${row} [data-test=pause]`);
    expect(await page.$(`${row} .badge.paused`)).toBeNull();
    expect(await paused()).toBe(false);
  });

  it("draws the last hour's throughput and backlog from GetQueueHistory", async () => {
    const queue = uniqueQueue("charts");
    await makeJobs(tb.db, 4, { queue, state: "available" });
    const { loops } = tb.app;
    await loops.counters.runOnce();
    await loops.sampler.runOnce();
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 3 });
    const leased = await s.take(3);
    await tb.workers.ack({ leaseTokens: leased.map((l) => l.leaseToken) });
    s.kill();
    await loops.counters.runOnce();
    await loops.sampler.runOnce();
    const { page } = await open(tb, "#/queues");
    const row = `tr[data-queue="${queue}"]`;
    await page.waitForSelector(`${row} [data-test=throughput] svg polyline`);
    const points = await page.$eval(`${row} [data-test=throughput]`, (f) => Number(f.getAttribute("data-points")));
    expect(points).toBeGreaterThanOrEqual(1);
    await waitForText(page, `${row} [data-test=throughput]`, /completed [1-9]/);
    await waitForText(page, `${row} [data-test=backlog]`, "waiting");
    await shot(page, "12-charts");
  });

  it("lists open Lease streams on the Workers page", async () => {
    const queue = uniqueQueue("workers");
    await makeJobs(tb.db, 2, { queue, state: "available" });
    const workerId = `dash-worker-${process.pid}`;
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 5, workerId });
    try {
      await s.take(2);
      const { page } = await open(tb, "#/workers");
      const row = `tr[data-worker="${workerId}"]`;
      await page.waitForSelector(row);
      await waitForText(page, row, queue);
      await waitForText(page, `${row} td:nth-child(3)`, "3 / 5");
      await waitForText(page, `${row} td:nth-child(4)`, "2");
      // The page shows what ListWorkers says, the peer included.
      const [w] = (await tb.admin.listWorkers({ queue })).workers;
      expect(w?.workerId).toBe(workerId);
      expect(await textOf(page, `${row} td:nth-child(5)`)).toBe(w!.brokerId);
      expect(await textOf(page, `${row} td:nth-child(6)`)).toBe(w!.peer);
      if (w!.peer) expect(w!.peer).toContain("127.0.0.1");
      await shot(page, "13-workers");
    } finally {
      s.kill();
    }
  });

  it("shows schedules with their next and last runs", async () => {
    const queue = uniqueQueue("sched");
    const name = `nightly-${queue}`;
    await tb.admin.setSchedule({ schedule: { name, cron: "0 3 * * *", job: { queue, type: "cleanup" } } });
    const { page } = await open(tb, "#/schedules");
    const row = `tr[data-schedule="${name}"]`;
    await page.waitForSelector(row);
    await waitForText(page, row, "0 3 * * *");
    await waitForText(page, row, "cleanup");
    await waitForText(page, `${row} td:nth-child(5)`, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in /);
    await waitForText(page, `${row} td:nth-child(6)`, "never");
    await shot(page, "14-schedules");
  });

  it("would see a CSP violation and a foreign request if the page made one (the checks themselves work)", async () => {
    const origin = new URL(tb.url).origin;
    const { page, watch } = await openPage(chromium.browser, origin);
    try {
      await page.goto(`${tb.url}/#/queues`);
      await page.waitForSelector("[data-test=queues]");
      // Another origin on loopback (port 9, discard): the CSP refuses it before any packet is sent.
      await page.evaluate(() => {
        const img = document.createElement("img");
        img.src = "http://127.0.0.2:9/x.png";
        document.body.appendChild(img);
        document.body.setAttribute("style", "color: red");
      });
      await page.waitForFunction(() => true);
      const deadline = Date.now() + 5000;
      while (watch.cspViolations.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(watch.cspViolations.join("\n")).toMatch(/img-src/);
      expect(watch.cspViolations.join("\n")).toMatch(/style-src/);
      // Trusted Types: HTML from a string is refused outright.
      const tt = await page.evaluate(() => {
        try {
          document.body.innerHTML = "<b>x</b>";
          return "allowed";
        } catch (e) {
          return String(e);
        }
      });
      expect(tt).toMatch(/TrustedHTML/);
    } finally {
      await page.close();
    }
  });

  it("says so at / when the dashboard was never built", async () => {
    const empty = await mkdtemp(path.join(os.tmpdir(), "jobwire-nodash-"));
    try {
      const routes = httpRoutes({ metrics: {} as never, ready: async () => true, log: silentLogger, dashboardDir: empty });
      const headers: Record<string, string> = {};
      let body = "";
      const res = { statusCode: 0, setHeader: (k: string, v: string) => void (headers[k] = v), end: (b?: string | Uint8Array) => void (body = String(b ?? "")) };
      expect(routes({ method: "GET", url: "/" }, res)).toBe(true);
      expect(res.statusCode).toBe(503);
      expect(body).toContain("dashboard was not built");
      expect(body).toContain("npm run build");
      expect(headers["content-security-policy"]).toContain("default-src 'self'");
      await writeFile(path.join(empty, "index.html"), "<!doctype html><p>built</p>");
      // A build that appears later is served without a restart.
      expect(routes({ method: "GET", url: "/" }, res)).toBe(true);
      expect(res.statusCode).toBe(200);
      expect(body).toContain("built");
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

/** Signs in on the page's sign-in form and waits for the signed-in header. */
async function signIn(page: Page, token: string): Promise<void> {
  const input = await page.waitForSelector("[data-test=signin] input[name=token]");
  await input!.type(token);
  await input!.press("Enter");
  await page.waitForSelector("[data-test=who]");
}

describe("the dashboard with plain tokens (JOBWIRE_AUTH_TOKENS)", () => {
  const TOKEN = "plain-token-0123456789abcdef";
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker({ authTokens: [TOKEN] });
  });
  afterAll(async () => {
    await tb?.stop();
  });

  it("asks for a token, refuses a wrong one, keeps the right one in this tab only, and signs out", async () => {
    const queue = uniqueQueue("tokens");
    await makeJobs(tb.db, 2, { queue, state: "available" });
    const { page } = await open(tb, "#/queues");
    await page.waitForSelector("[data-test=signin]");
    expect(await page.$("[data-test=queues]")).toBeNull();
    await shot(page, "20-signin");
    const input = await page.waitForSelector("[data-test=signin] input[name=token]");
    expect(await input!.evaluate((i) => (i as HTMLInputElement).type)).toBe("password");
    await input!.type("wrong-token-0123456789abcdef");
    await input!.press("Enter");
    await waitForText(page, "[data-test=signin] [role=alert]", "did not accept");
    await input!.evaluate((i) => ((i as HTMLInputElement).value = ""));
    await signIn(page, TOKEN);
    await page.waitForSelector(`tr[data-queue="${queue}"]`);
    await waitForText(page, "[data-test=scopes]", "admin");
    await shot(page, "21-signed-in");
    // The token is in sessionStorage, and nowhere a cookie or localStorage would carry it.
    const stored = await page.evaluate(() => ({ session: sessionStorage.getItem("jobwire.token"), local: localStorage.length, cookie: document.cookie }));
    expect(stored).toEqual({ session: TOKEN, local: 0, cookie: "" });
    // A reload keeps the session.
    await page.reload();
    await page.waitForSelector(`tr[data-queue="${queue}"]`);
    await page.locator("[data-test=sign-out]").click();
    await page.waitForSelector("[data-test=signin]");
    expect(await page.evaluate(() => sessionStorage.getItem("jobwire.token"))).toBeNull();
  });
});

// Scoped tokens need the broker's tokens file (issue 12). Until the broker has it, this block is
// skipped, and the probe says what was missing.
const auth = await startAuthBroker();
if (auth.missing) console.warn(`dashboard auth tests skipped: ${auth.missing}`);
// At file level, so that the broker stops even when a -t filter skips the whole block.
afterAll(async () => {
  await auth.broker?.stop();
});
describe.skipIf(!auth.broker)("the dashboard with scoped tokens (JOBWIRE_AUTH_FILE)", () => {
  let ab: AuthBroker;
  let tb: TestBroker;
  beforeAll(() => {
    ab = auth.broker!;
    tb = ab.tb;
  });

  it("signs in with an admin token, shows who it is, the queues, and replays a dead job", async () => {
    const queue = uniqueQueue("auth-admin");
    const { id } = await makeJob(tb.db, { queue, state: "dead", attempt: 3, maxAttempts: 3, errors: [{ attempt: 3, message: "card declined" }] });
    const { page } = await open(tb, "#/queues");
    await signIn(page, ADMIN.token);
    expect(await textOf(page, "[data-test=who]")).toBe(ADMIN.name);
    await waitForText(page, "[data-test=scopes]", "read, admin");
    await waitForText(page, "[data-test=who-queues]", "*");
    await page.waitForSelector(`tr[data-queue="${queue}"] [data-test=count-dead]`);
    await shot(page, "30-auth-admin-queues");
    await page.locator(`tr[data-queue="${queue}"] [data-test=count-dead]`).click();
    await page.locator(`tr[data-job-id="${id}"] a`).click();
    await waitForText(page, "[data-test=error-row]", "card declined");
    await clickAndConfirm(page, "[data-test=replay]");
    await waitForText(page, "[data-test=toast-ok]", `Replayed job ${id}.`);
    expect(await stateOf(tb, id)).toBe("available");
  });

  it("lets a read-only token look but not act: buttons disabled, and a forced call is refused", async () => {
    const queue = uniqueQueue("auth-reader");
    const { id } = await makeJob(tb.db, { queue, state: "dead", attempt: 1, maxAttempts: 1, errors: [{ attempt: 1, message: "boom" }] });
    const { page } = await open(tb, "#/queues");
    await signIn(page, READER.token);
    await waitForText(page, "[data-test=scopes]", "read");
    expect(await textOf(page, "[data-test=scopes]")).not.toContain("admin");
    const row = `tr[data-queue="${queue}"]`;
    await page.waitForSelector(row);
    for (const b of ["pause", "replay-dead"]) {
      const [disabled, title] = await page.$eval(`${row} [data-test=${b}]`, (el) => [(el as HTMLButtonElement).disabled, el.getAttribute("title")]);
      expect(disabled, b).toBe(true);
      expect(title).toContain("lacks scope admin");
    }
    await shot(page, "31-auth-reader-queues");
    await page.goto(`${tb.url}/#/jobs/${id}`);
    await waitForText(page, "[data-test=error-row]", "boom");
    expect(await page.$eval("[data-test=replay]", (el) => (el as HTMLButtonElement).disabled)).toBe(true);

    // Forced from the page with the reader's own token: the broker refuses it, and runs nothing.
    const forced = await page.evaluate(async (jobId: string) => {
      const res = await fetch("/jobwire.v1.AdminService/Replay", {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${sessionStorage.getItem("jobwire.token")}` },
        body: JSON.stringify({ jobIds: [jobId] }),
      });
      return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
    }, id);
    expect(forced.status).toBe(403);
    expect(forced.body.code).toBe("permission_denied");
    expect(forced.body.message).toContain("admin");
    // And through the page's own button, re-enabled by hand: the refusal is shown as a message.
    await page.$eval("[data-test=replay]", (el) => ((el as HTMLButtonElement).disabled = false));
    await clickAndConfirm(page, "[data-test=replay]");
    await waitForText(page, "[data-test=toast-error]", "PERMISSION_DENIED");
    await shot(page, "32-auth-reader-refused");
    expect(await stateOf(tb, id)).toBe("dead");
    // Still signed in: a refusal is not a sign-out.
    await page.waitForSelector("[data-test=who]");
  });

  it("shows a token limited to some queues only those queues, and lets it act on them", async () => {
    const mine = `billing.${uniqueQueue("invoices")}`;
    const other = uniqueQueue("emails");
    await makeJobs(tb.db, 1, { queue: mine, state: "available" });
    await makeJobs(tb.db, 1, { queue: other, state: "available" });
    const { page } = await open(tb, "#/queues");
    await signIn(page, BILLING.token);
    await waitForText(page, "[data-test=who-queues]", "billing.*");
    await page.waitForSelector(`tr[data-queue="${mine}"]`);
    expect(await page.$(`tr[data-queue="${other}"]`)).toBeNull();
    expect(await page.$eval(`tr[data-queue="${mine}"] [data-test=pause]`, (el) => (el as HTMLButtonElement).disabled)).toBe(false);
    // Listing jobs needs a queue it may read: the page asks for one rather than call and be refused.
    await page.locator("nav a[href='#/jobs']").click();
    await waitForText(page, "[data-test=pick-queue]", "billing.*");
    await page.type("[data-test=filters] input[name=queue]", mine);
    await page.locator("[data-test=filters] button[type=submit]").click();
    await page.waitForSelector("table.jobs tbody tr[data-job-id]");
    await shot(page, "34-auth-limited-queues");
  });

  it("sends the user back to sign-in when the token stops working", async () => {
    const { page } = await open(tb, "#/queues");
    await signIn(page, ADMIN.token);
    await page.waitForSelector("[data-test=queues]");
    // Revoke the admin token: the broker reloads the file when it changes.
    await ab.writeTokens([READER]);
    try {
      const deadline = Date.now() + 10_000;
      while ((await whoAmI(tb, ADMIN.token)).status !== 401) {
        if (Date.now() > deadline) throw new Error("the broker did not reload the tokens file within 10 s");
        await new Promise((r) => setTimeout(r, 50));
      }
      // The Queues page refreshes every 3 s; its next call is refused.
      await page.waitForSelector("[data-test=signin]");
      await waitForText(page, "[data-test=signin] [role=alert]", "sign in again");
      expect(await page.evaluate(() => sessionStorage.getItem("jobwire.token"))).toBeNull();
      await shot(page, "33-auth-revoked");
    } finally {
      await ab.writeTokens([ADMIN, READER, BILLING]);
    }
  });
});
