import { describe, whenUnauthenticated } from "./api.js";
import { h, replace } from "./dom.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import type { Page } from "./pages/page.js";
import { queuesPage } from "./pages/queues.js";
import { schedulesPage } from "./pages/schedules.js";
import { signInPage } from "./pages/signin.js";
import { workersPage } from "./pages/workers.js";
import { parse } from "./router.js";
import { config, forget, start, who } from "./session.js";
import { badge } from "./ui.js";

const PAGES: Record<string, Page> = {
  queues: queuesPage,
  jobs: jobsPage,
  job: jobPage,
  schedules: schedulesPage,
  workers: workersPage,
};

const NAV: [string, string][] = [
  ["queues", "Queues"],
  ["jobs", "Jobs"],
  ["schedules", "Schedules"],
  ["workers", "Workers"],
];

const nav = h("nav", { class: "nav" });
const account = h("div", { class: "account", "data-test": "account" });
const main = h("main", { id: "main" });
let leave: () => void = () => {};

function drawAccount(): void {
  if (!who) {
    replace(account);
    return;
  }
  if (!who.authEnabled && !config.authEnabled) {
    replace(account, badge("auth off", "muted-badge"), h("span", { class: "muted" }, " every call allowed"));
    return;
  }
  const out = h("button", { type: "button", "data-test": "sign-out" }, "Sign out");
  out.addEventListener("click", () => {
    forget();
    showSignIn("Signed out.");
  });
  replace(
    account,
    h("span", null, "signed in as ", h("strong", { "data-test": "who" }, who.name || "(unnamed)")),
    h("span", { class: "muted", "data-test": "scopes" }, ` · ${who.scopes.join(", ") || "no scopes"}`),
    h("span", { class: "muted", "data-test": "who-queues" }, ` · queues ${who.queues.join(", ") || "none"}`),
    " ",
    out,
  );
}

function drawNav(page: string): void {
  const current = page === "job" ? "jobs" : page;
  replace(
    nav,
    NAV.map(([p, label]) => h("a", { href: `#/${p}`, class: p === current ? "current" : null, "aria-current": p === current ? "page" : null }, label)),
  );
}

function render(): void {
  leave();
  leave = () => {};
  const route = parse(location.hash);
  if (!who) {
    showSignIn("");
    return;
  }
  const page = PAGES[route.page] ?? queuesPage;
  drawNav(route.page);
  drawAccount();
  main.replaceChildren();
  leave = page(main, route);
}

function showSignIn(reason: string): void {
  leave();
  leave = () => {};
  replace(nav);
  replace(account);
  signInPage(main, reason, () => render());
}

async function boot(): Promise<void> {
  document.body.replaceChildren(h("header", { class: "top" }, h("a", { href: "#/queues", class: "brand" }, "jobwire"), nav, account), main);
  whenUnauthenticated((err) => {
    forget();
    showSignIn(`Please sign in again: ${describe(err)}`);
  });
  window.addEventListener("hashchange", () => render());
  try {
    if (await start()) render();
    else showSignIn("");
  } catch (err) {
    replace(main, h("div", { class: "error-line", role: "alert" }, `The dashboard could not reach the broker: ${describe(err)}`));
  }
}

void boot();
