import { rpc } from "../api.js";
import { h, replace } from "../dom.js";
import { num, relative, stateName, time } from "../format.js";
import { go, href, jobHref, type Route } from "../router.js";
import { who } from "../session.js";
import { STATES, type Job, type JobState } from "../types.js";
import { act, actionButton, badge, errorLine, table } from "../ui.js";
import type { Page } from "./page.js";

const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_PAGE_SIZE = 50;

/**
 * The Jobs page's state lives in the hash: the filters, and `p`, the trail
 * of page tokens that led to this page (ListJobs pages by keyset: each
 * token is where the previous page ended). "Next" appends the response's
 * token, "Previous" drops the last one, so the back button, a reload and a
 * shared link all land on the same page.
 */
interface Filters {
  queue: string;
  state: string;
  type: string;
  error: string;
  size: number;
  trail: string[];
}

function filtersOf(params: URLSearchParams): Filters {
  const size = Number(params.get("size"));
  return {
    queue: params.get("queue") ?? "",
    state: params.get("state") ?? "",
    type: params.get("type") ?? "",
    error: params.get("error") ?? "",
    size: PAGE_SIZES.includes(size) ? size : DEFAULT_PAGE_SIZE,
    trail: params.getAll("p"),
  };
}

function link(f: Filters, trail: string[]): string {
  return href("jobs", {
    queue: f.queue,
    state: f.state,
    type: f.type,
    error: f.error,
    size: f.size === DEFAULT_PAGE_SIZE ? undefined : String(f.size),
    p: trail,
  });
}

function lastError(j: Job): string {
  const e = j.errors?.at(-1)?.message ?? "";
  return e.length > 160 ? `${e.slice(0, 160)}…` : e;
}

export const jobsPage: Page = (root, route: Route) => {
  const f = filtersOf(route.params);
  const err = h("div");
  const results = h("div", null, h("p", { class: "loading" }, "loading…"));

  const input = (name: string, value: string, placeholder: string, list?: string) =>
    h("input", { name, value, placeholder, type: "search", list: list ?? null, autocomplete: "off", spellcheck: "false" });
  const queueIn = input("queue", f.queue, "any queue", "known-queues");
  const typeIn = input("type", f.type, "any type");
  const errorIn = input("error", f.error, "text in the last error");
  const stateIn = h(
    "select",
    { name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: stateName(s), selected: stateName(s) === f.state }, stateName(s))),
  );
  const sizeIn = h(
    "select",
    { name: "size", title: "jobs per page" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === f.size }, `${n} a page`)),
  );
  const known = h("datalist", { id: "known-queues" });
  const form = h(
    "form",
    { class: "filters", "data-test": "filters" },
    h("label", null, "Queue", queueIn),
    h("label", null, "State", stateIn),
    h("label", null, "Type", typeIn),
    h("label", null, "Error contains", errorIn),
    h("label", null, "Page", sizeIn),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("a", { href: href("jobs"), class: "clear" }, "clear"),
    known,
  );
  // Never a real submission (the CSP's form-action 'none' would refuse one): the filters go into the hash.
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(link({ queue: queueIn.value.trim(), state: stateIn.value, type: typeIn.value.trim(), error: errorIn.value, size: Number(sizeIn.value), trail: [] }, []));
  });
  sizeIn.addEventListener("change", () => form.requestSubmit());
  stateIn.addEventListener("change", () => form.requestSubmit());

  replace(root, h("h2", null, "Jobs"), form, err, results);

  // The queue list for the filter's suggestions; the page works without it.
  rpc("AdminService/GetQueueStats", {})
    .then((s) => replace(known, (s.queues ?? []).map((q) => h("option", { value: q.queue ?? "" }))))
    .catch(() => {});

  async function load(): Promise<void> {
    // A token limited to some queues may list jobs only of a queue it names (the broker refuses the rest).
    if (!f.queue && who && !who.queues.includes("*")) {
      replace(results, h("p", { class: "note", "data-test": "pick-queue" }, `This token may read only queues ${who.queues.join(", ")}: name one in the Queue filter.`));
      return;
    }
    try {
      const states = f.state ? [`JOB_STATE_${f.state.toUpperCase()}` as JobState] : undefined;
      const page = await rpc("AdminService/ListJobs", {
        queue: f.queue || undefined,
        type: f.type || undefined,
        errorContains: f.error || undefined,
        states,
        pageSize: f.size,
        pageToken: f.trail.at(-1) || undefined,
      });
      const jobs = page.jobs ?? [];
      const rows = jobs.map((j) =>
        h(
          "tr",
          { "data-job-id": j.id ?? "" },
          h("td", null, h("a", { href: jobHref(j.id ?? ""), class: "mono" }, j.id ?? "")),
          h("td", null, j.queue ?? ""),
          h("td", null, j.type ?? ""),
          h("td", null, badge(stateName(j.state), `st-${stateName(j.state)}`)),
          h("td", { class: "num" }, `${j.attempt ?? 0}/${j.maxAttempts ?? 0}`),
          h("td", { title: time(j.createdAt) }, relative(j.createdAt)),
          h("td", { title: time(j.finishedAt) }, relative(j.finishedAt)),
          h("td", { class: "err-cell" }, lastError(j)),
        ),
      );
      const pageNo = f.trail.length + 1;
      const first = (pageNo - 1) * f.size + 1;
      const prev = h("a", { class: "button", href: link(f, f.trail.slice(0, -1)), "data-test": "prev" }, "← Previous");
      const next = h("a", { class: "button", href: link(f, [...f.trail, page.nextPageToken ?? ""]), "data-test": "next" }, "Next →");
      const nav = h(
        "div",
        { class: "pager" },
        f.trail.length ? prev : h("span", { class: "button disabled" }, "← Previous"),
        h("span", { class: "muted", "data-test": "page-info" }, jobs.length ? `page ${pageNo}: jobs ${num(first)}–${num(first + jobs.length - 1)}` : `page ${pageNo}: no jobs`),
        page.nextPageToken ? next : h("span", { class: "button disabled" }, "Next →"),
        page.sizeLimited ? h("span", { class: "muted" }, " (a short page: large jobs filled the response)") : null,
      );
      const bulk =
        f.state === "dead" && f.queue
          ? actionButton("Replay all matching", "admin", f.queue, () => void replayMatching(), { "data-test": "replay-matching" })
          : null;
      replace(
        results,
        h("div", { class: "toolbar" }, nav, bulk),
        table(["id", "queue", "type", "state", "attempts", "created", "finished", "last error"], rows, "No jobs match.", { class: "jobs", "data-test": "jobs" }, [4]),
      );
      errorLine(err, null);
    } catch (e) {
      errorLine(err, e);
      replace(results);
    }
  }

  async function replayMatching(): Promise<void> {
    const filter = { queue: f.queue, type: f.type || undefined, errorContains: f.error || undefined };
    // A dry run first, so the dialog can say how many jobs it is about to touch.
    let n: number;
    try {
      n = (await rpc("AdminService/Replay", { filter, dryRun: true })).replayed ?? 0;
    } catch (e) {
      errorLine(err, e);
      return;
    }
    const what = [f.type && `type ${f.type}`, f.error && `last error containing “${f.error}”`].filter(Boolean).join(", ");
    await act({
      title: `Replay ${num(n)} dead job(s) of ${f.queue}?`,
      body: `Every dead job of ${f.queue}${what ? ` with ${what}` : ""} becomes available again with a fresh attempt budget (at most 10,000 at once).`,
      confirm: "Replay",
      run: async () => `Replayed ${num((await rpc("AdminService/Replay", { filter })).replayed)} job(s).`,
      after: () => void load(),
    });
  }

  void load();
  return () => {};
};
