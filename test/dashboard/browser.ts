import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer, { type Browser, type Page } from "puppeteer-core";

/**
 * A real headless Chromium for the dashboard's tests: Debian's `chromium`
 * package (apt-get install -y chromium), driven by puppeteer-core, which
 * never downloads a browser. Every launch gets a fresh profile, and the
 * flags keep Chromium from calling home (no component updates, sync,
 * QUIC or background fetches), so the only traffic is to the broker.
 */
export const CHROMIUM = process.env.JOBWIRE_CHROMIUM ?? "/usr/bin/chromium";

/** Screenshots land here; test-results/ is not committed. */
export const SHOTS = fileURLToPath(new URL("../../test-results/dashboard", import.meta.url));

/** Every wait on the page is bounded by this. */
export const WAIT_MS = 10_000;

export interface LaunchedBrowser {
  browser: Browser;
  close(): Promise<void>;
}

export async function launch(): Promise<LaunchedBrowser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium), or set JOBWIRE_CHROMIUM`);
  }
  // Each run's screenshots only: a failed-*.png from an earlier run would mislead.
  await rm(SHOTS, { recursive: true, force: true });
  await mkdir(SHOTS, { recursive: true });
  const profile = await mkdtemp(path.join(os.tmpdir(), "jobwire-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      `--user-data-dir=${profile}`,
    ],
    defaultViewport: { width: 1400, height: 900 },
    protocolTimeout: 30_000,
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** What a page did that a dashboard must never do, gathered while a test uses it. */
export interface Watch {
  cspViolations: string[];
  consoleErrors: string[];
  pageErrors: string[];
  /** Requests to anywhere but the broker's origin. */
  foreignRequests: string[];
  requests: string[];
}

/**
 * A new tab that records CSP violations (the securitypolicyviolation event,
 * reported through a CDP binding, so it works under the page's own CSP),
 * console errors, uncaught exceptions, and every request's URL.
 */
export async function openPage(browser: Browser, origin: string): Promise<{ page: Page; watch: Watch }> {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const watch: Watch = { cspViolations: [], consoleErrors: [], pageErrors: [], foreignRequests: [], requests: [] };
  await page.exposeFunction("__jobwireCsp", (v: string) => void watch.cspViolations.push(v));
  await page.evaluateOnNewDocument(`document.addEventListener("securitypolicyviolation", (e) =>
    window.__jobwireCsp(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`);
  page.on("console", (m) => {
    const text = m.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) watch.cspViolations.push(text);
    // A refused or failed RPC also logs "Failed to load resource"; the pages show those errors themselves,
    // and the tests check what the pages show. Any other failed load (an asset, say) counts.
    const url = m.location()?.url ?? "";
    if (m.type() === "error" && !(/^Failed to load resource/.test(text) && url.startsWith(`${origin}/jobwire.v1.`))) {
      watch.consoleErrors.push(url ? `${text} (${url})` : text);
    }
  });
  page.on("pageerror", (e) => void watch.pageErrors.push(String(e)));
  page.on("request", (r) => {
    const url = r.url();
    watch.requests.push(url.slice(0, 200));
    // data: and blob: URLs stay in the browser (and the CSP refuses data: images anyway).
    if (!/^(data|blob):/.test(url) && new URL(url).origin !== origin) watch.foreignRequests.push(url);
  });
  return { page, watch };
}

export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) as `${string}.png`, fullPage: true });
}

/** Waits until `selector`'s text contains `text`; the error says what was there instead. */
export async function waitForText(page: Page, selector: string, text: string | RegExp): Promise<void> {
  const want = typeof text === "string" ? { s: text } : { re: text.source, flags: text.flags };
  try {
    await page.waitForFunction(
      (sel: string, w: { s?: string; re?: string; flags?: string }) => {
        const t = Array.from(document.querySelectorAll(sel), (e) => e.textContent ?? "").join("\n");
        return w.s !== undefined ? t.includes(w.s) : new RegExp(w.re!, w.flags).test(t);
      },
      { timeout: WAIT_MS },
      selector,
      want,
    );
  } catch (err) {
    const now = await page.$$eval(selector, (els) => els.map((e) => e.textContent).join("\n")).catch(() => "(nothing)");
    throw new Error(`waited ${WAIT_MS} ms for ${JSON.stringify(selector)} to contain ${String(text)}; it has: ${now.slice(0, 500)}`, { cause: err });
  }
}

export async function textOf(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (e) => e.textContent ?? "");
}

/**
 * Clicks the element and answers the in-page confirmation dialog. Locators
 * retry until the element is attached, visible and still: the Queues page
 * redraws its table every 3 s, which would detach a handle taken earlier.
 */
export async function clickAndConfirm(page: Page, selector: string): Promise<void> {
  await page.locator(selector).click();
  await page.locator("dialog[open] [data-test=confirm-ok]").click();
}
