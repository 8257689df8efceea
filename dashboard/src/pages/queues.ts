import { rpc } from "../api.js";
import { chart } from "../charts.js";
import { h, replace } from "../dom.js";
import { count, num, seconds, span } from "../format.js";
import { poll } from "../poll.js";
import { href } from "../router.js";
import type { QueueSample, QueueStats } from "../types.js";
import { act, actionButton, badge, errorLine, table } from "../ui.js";
import type { Page } from "./page.js";

/** Counts change with every ack; 3 s keeps the page live without loading the broker (one GetQueueStats, one GetQueueHistory). */
const REFRESH_MS = 3000;

const COLUMNS: { key: keyof QueueStats; label: string; state: string }[] = [
  { key: "scheduled", label: "scheduled", state: "scheduled" },
  { key: "available", label: "available", state: "available" },
  { key: "running", label: "running", state: "running" },
  { key: "retryable", label: "retryable", state: "retryable" },
  { key: "completed", label: "completed", state: "completed" },
  { key: "dead", label: "dead", state: "dead" },
  { key: "cancelled", label: "cancelled", state: "cancelled" },
];

export const queuesPage: Page = (root) => {
  const err = h("div");
  const body = h("div", null, h("p", { class: "loading" }, "loading…"));
  replace(root, h("h2", null, "Queues"), err, body);

  function charts(samples: QueueSample[]): HTMLElement[] {
    const at = samples.map((x) => new Date(x.at ?? 0).getTime());
    return [
      chart({
        title: "throughput",
        unit: "jobs per sample",
        at,
        test: "throughput",
        series: [
          { label: "completed", cls: "s-ok", values: samples.map((x) => count(x.completed)), area: true, legend: "sum" },
          { label: "failed", cls: "s-bad", values: samples.map((x) => count(x.failed)), legend: "sum" },
        ],
      }),
      chart({
        title: "backlog",
        unit: "jobs",
        at,
        test: "backlog",
        series: [
          { label: "waiting", cls: "s-wait", values: samples.map((x) => count(x.available) + count(x.waiting)), area: true, legend: "last" },
          { label: "running", cls: "s-run", values: samples.map((x) => count(x.running)), legend: "last" },
        ],
      }),
    ];
  }

  function row(q: QueueStats, samples: QueueSample[]): HTMLTableRowElement {
    const name = q.queue ?? "";
    const dead = count(q.dead);
    const cells = COLUMNS.map((c) => {
      const n = count(q[c.key] as string | undefined);
      return h(
        "td",
        { class: `num${c.key === "dead" && n > 0 ? " dead" : ""}` },
        n > 0 ? h("a", { href: href("jobs", { queue: name, state: c.state }), "data-test": `count-${c.state}` }, num(n)) : "0",
      );
    });
    const pause = q.paused
      ? actionButton("Resume", "admin", name, () =>
          act({
            title: `Resume ${name}?`,
            body: "Workers will lease its jobs again, on every broker replica.",
            confirm: "Resume",
            run: async () => {
              await rpc("AdminService/ResumeQueue", { queue: name });
              return `Resumed ${name}.`;
            },
            after: () => void refresh.now(),
          }),
        { "data-test": "resume" })
      : actionButton("Pause", "admin", name, () =>
          act({
            title: `Pause ${name}?`,
            body: "No broker replica will lease its jobs until it is resumed. Enqueues still succeed, and running jobs finish.",
            confirm: "Pause",
            danger: true,
            run: async () => {
              await rpc("AdminService/PauseQueue", { queue: name });
              return `Paused ${name}.`;
            },
            after: () => void refresh.now(),
          }),
        { "data-test": "pause" });
    const replay =
      dead > 0
        ? actionButton(`Replay ${num(dead)} dead`, "admin", name, () =>
            act({
              title: `Replay every dead job of ${name}?`,
              body: `${num(dead)} job(s) become available again with a fresh attempt budget; their error history is kept.`,
              confirm: "Replay",
              run: async () => {
                const r = await rpc("AdminService/Replay", { filter: { queue: name } });
                return `Replayed ${num(r.replayed)} job(s) of ${name}.`;
              },
              after: () => void refresh.now(),
            }),
          { "data-test": "replay-dead" })
        : null;
    return h(
      "tr",
      { "data-queue": name },
      h("td", { class: "name" }, h("a", { href: href("jobs", { queue: name }) }, name), q.paused ? badge("paused", "paused") : null),
      cells,
      h("td", { class: "num" }, span(seconds(q.oldestAvailableAge)) || "–"),
      h("td", null, h("div", { class: "charts" }, charts(samples))),
      h("td", null, h("div", { class: "actions" }, pause, replay)),
    );
  }

  const refresh = poll(async () => {
    try {
      const [stats, history] = await Promise.all([
        rpc("AdminService/GetQueueStats", {}),
        // The charts are a nicety: a broker without history still shows its counts.
        rpc("AdminService/GetQueueHistory", {}).catch(() => ({ samples: [] as QueueSample[] })),
      ]);
      const byQueue = new Map<string, QueueSample[]>();
      for (const x of history.samples ?? []) {
        const list = byQueue.get(x.queue ?? "") ?? [];
        list.push(x);
        byQueue.set(x.queue ?? "", list);
      }
      const qs = (stats.queues ?? []).slice().sort((a, b) => (a.queue ?? "").localeCompare(b.queue ?? ""));
      replace(
        body,
        table(
          ["queue", ...COLUMNS.map((c) => c.label), "oldest waiting", "last hour", ""],
          qs.map((q) => row(q, byQueue.get(q.queue ?? "") ?? [])),
          "No queues yet: enqueue a job and it shows here.",
          { class: "queues", "data-test": "queues" },
          [1, 2, 3, 4, 5, 6, 7, 8],
        ),
      );
      errorLine(err, null);
    } catch (e) {
      errorLine(err, e);
    }
  }, REFRESH_MS);
  return () => refresh.stop();
};
