import { rpc } from "../api.js";
import { h, replace } from "../dom.js";
import { relative, time } from "../format.js";
import { poll } from "../poll.js";
import { href } from "../router.js";
import { errorLine, table } from "../ui.js";
import type { Page } from "./page.js";

/** Credit and held jobs move with every lease; replicas report their streams every few seconds. */
const REFRESH_MS = 3000;

export const workersPage: Page = (root) => {
  const err = h("div");
  const body = h("div", null, h("p", { class: "loading" }, "loading…"));
  replace(root, h("h2", null, "Workers"), h("p", { class: "muted" }, "Open Lease streams on every broker replica."), err, body);
  const refresh = poll(async () => {
    try {
      const workers = ((await rpc("AdminService/ListWorkers", {})).workers ?? [])
        .slice()
        .sort((a, b) => (a.workerId ?? "").localeCompare(b.workerId ?? "") || (a.connectedAt ?? "").localeCompare(b.connectedAt ?? ""));
      replace(
        body,
        table(
          ["worker", "queues", "credit", "jobs held", "broker", "peer", "connected"],
          workers.map((w) =>
            h(
              "tr",
              { "data-worker": w.workerId ?? "" },
              h("td", { class: "mono" }, w.workerId ?? ""),
              h("td", null, (w.queues ?? []).map((q, i) => [i ? ", " : "", h("a", { href: href("jobs", { queue: q }) }, q)])),
              h("td", { class: "num", title: `of max_in_flight ${w.maxInFlight ?? 0}` }, `${w.credit ?? 0} / ${w.maxInFlight ?? 0}`),
              h("td", { class: "num" }, String(w.jobsHeld ?? 0)),
              h("td", { class: "mono" }, w.brokerId ?? ""),
              h("td", { class: "mono" }, w.peer ?? ""),
              h("td", { title: w.connectedAt ?? "" }, `${time(w.connectedAt)} (${relative(w.connectedAt)})`),
            ),
          ),
          "No worker is connected.",
          { "data-test": "workers" },
          [2, 3],
        ),
      );
      errorLine(err, null);
    } catch (e) {
      errorLine(err, e);
    }
  }, REFRESH_MS);
  return () => refresh.stop();
};
