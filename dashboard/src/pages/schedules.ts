import { rpc } from "../api.js";
import { h, replace } from "../dom.js";
import { relative, time } from "../format.js";
import { poll } from "../poll.js";
import { jobHref } from "../router.js";
import { badge, errorLine, table } from "../ui.js";
import type { Page } from "./page.js";

/** Schedules fire at most once a minute (five-field cron); 10 s is fresh enough. */
const REFRESH_MS = 10_000;

export const schedulesPage: Page = (root) => {
  const err = h("div");
  const body = h("div", null, h("p", { class: "loading" }, "loading…"));
  replace(root, h("h2", null, "Schedules"), err, body);
  const refresh = poll(async () => {
    try {
      const list = ((await rpc("AdminService/ListSchedules", {})).schedules ?? []).slice().sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
      replace(
        body,
        table(
          ["name", "cron (UTC)", "queue", "type", "next run", "last run", "last job"],
          list.map((sc) =>
            h(
              "tr",
              { "data-schedule": sc.name ?? "" },
              h("td", null, sc.name ?? "", sc.paused ? badge("paused", "paused") : null),
              h("td", { class: "mono" }, sc.cron ?? ""),
              h("td", null, sc.job?.queue ?? ""),
              h("td", null, sc.job?.type ?? ""),
              h("td", { title: sc.nextRunAt ?? "" }, sc.paused ? h("span", { class: "muted" }, "paused") : `${time(sc.nextRunAt)} (${relative(sc.nextRunAt)})`),
              h("td", { title: sc.lastRunAt ?? "" }, sc.lastRunAt ? `${time(sc.lastRunAt)} (${relative(sc.lastRunAt)})` : h("span", { class: "muted" }, "never")),
              h("td", null, sc.lastJobId ? h("a", { href: jobHref(sc.lastJobId), class: "mono" }, sc.lastJobId) : ""),
            ),
          ),
          "No schedules. AdminService.SetSchedule creates one.",
          { "data-test": "schedules" },
        ),
      );
      errorLine(err, null);
    } catch (e) {
      errorLine(err, e);
    }
  }, REFRESH_MS);
  return () => refresh.stop();
};
