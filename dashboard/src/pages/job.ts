import { rpc } from "../api.js";
import { h, replace, type Child } from "../dom.js";
import { fromBase64, relative, renderPayload, seconds, span, stateName, time, traceId, traceLink } from "../format.js";
import { href } from "../router.js";
import { config } from "../session.js";
import type { Job, JobError } from "../types.js";
import { act, actionButton, badge, errorLine, table } from "../ui.js";
import type { Page } from "./page.js";

const FINAL = ["completed", "dead", "cancelled"];

function when(iso: string | undefined): Child {
  return iso ? h("span", { title: iso }, time(iso), h("span", { class: "muted" }, ` (${relative(iso)})`)) : h("span", { class: "muted" }, "–");
}

function field(label: string, value: Child): Child[] {
  return [h("dt", null, label), h("dd", null, value === "" || value === undefined || value === null ? h("span", { class: "muted" }, "–") : value)];
}

/**
 * The error history, oldest first. The broker keeps the first errors and
 * the most recent ones and counts what it dropped between them
 * (errors_dropped); the gap is drawn where the attempt numbers jump.
 */
function errorHistory(j: Job): HTMLElement {
  const errors = j.errors ?? [];
  const dropped = j.errorsDropped ?? 0;
  const rows: HTMLTableRowElement[] = [];
  let gapShown = false;
  errors.forEach((e: JobError, i) => {
    const prev = errors[i - 1];
    if (dropped > 0 && !gapShown && prev && (e.attempt ?? 0) - (prev.attempt ?? 0) > 1) {
      rows.push(h("tr", { class: "gap" }, h("td", { colspan: 4 }, `… ${dropped} error(s) dropped here to keep the history bounded …`)));
      gapShown = true;
    }
    rows.push(
      h(
        "tr",
        { "data-test": "error-row" },
        h("td", { class: "num" }, String(e.attempt ?? "")),
        h("td", null, when(e.at)),
        h("td", { class: "mono" }, e.workerId ?? ""),
        h("td", null, h("pre", { class: "err" }, e.message ?? "")),
      ),
    );
  });
  return h(
    "section",
    { "data-test": "errors" },
    h("h3", null, `Errors (${errors.length + dropped})`),
    dropped > 0 ? h("p", { class: "note", "data-test": "errors-dropped" }, `${dropped} error(s) were dropped from this history to keep it bounded; the first and the most recent are kept.`) : null,
    table(["attempt", "at", "worker", "message"], rows, "No failed attempts.", { class: "errors" }, [0]),
  );
}

function headersTable(j: Job): HTMLElement {
  const headers = Object.entries(j.headers ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const tid = traceId(j.headers?.traceparent);
  const url = traceLink(config.traceUrl, tid);
  return h(
    "section",
    null,
    h("h3", null, "Headers"),
    tid
      ? h(
          "p",
          { "data-test": "trace" },
          "Trace ",
          url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono", "data-test": "trace-link" }, tid) : h("span", { class: "mono" }, tid),
          url ? null : h("span", { class: "muted" }, " (set JOBWIRE_TRACE_URL for a link to your tracing UI)"),
        )
      : null,
    table(["name", "value"], headers.map(([k, v]) => h("tr", null, h("td", { class: "mono" }, k), h("td", { class: "mono wrap" }, v))), "No headers."),
  );
}

function payload(j: Job): HTMLElement {
  const p = renderPayload(j.payload, j.contentType);
  const size = fromBase64(j.payload).length;
  return h(
    "section",
    null,
    h("h3", null, "Payload ", h("span", { class: "muted" }, `${j.contentType || "application/json"}, ${size.toLocaleString("en-US")} bytes${p.kind === "hex" ? ", hex" : ""}`)),
    p.kind === "empty" ? h("p", { class: "muted" }, "Empty.") : h("pre", { class: `payload ${p.kind}`, "data-test": "payload" }, p.text),
  );
}

export const jobPage: Page = (root, route) => {
  const id = route.id;
  const err = h("div");
  const body = h("div", null, h("p", { class: "loading" }, "loading…"));
  replace(root, h("p", { class: "crumbs" }, h("a", { href: href("jobs") }, "Jobs"), " / ", h("span", { class: "mono" }, id)), err, body);

  async function load(): Promise<void> {
    try {
      const j = (await rpc("JobService/GetJob", { id })).job ?? {};
      const state = stateName(j.state);
      const queue = j.queue ?? "";
      const actions: Child[] = [];
      if (state === "dead" || state === "cancelled") {
        actions.push(
          actionButton("Replay", "admin", queue, () =>
            act({
              title: `Replay job ${id}?`,
              body: `It becomes available again on ${queue} with a fresh attempt budget; its error history is kept.`,
              confirm: "Replay",
              run: async () => {
                const r = await rpc("AdminService/Replay", { jobIds: [id], includeCancelled: state === "cancelled" });
                return r.replayed ? `Replayed job ${id}.` : `Job ${id} was not replayed: it is no longer ${state}.`;
              },
              after: () => void load(),
            }),
          { "data-test": "replay" }),
        );
      }
      if (!FINAL.includes(state)) {
        actions.push(
          actionButton(j.cancelRequested ? "Cancel requested" : "Cancel", "admin", queue, () =>
            act({
              title: `Cancel job ${id}?`,
              body: state === "running" ? "It is running: its worker is told on its next heartbeat, and the job is cancelled when the worker gives it up." : "It will not run.",
              confirm: "Cancel job",
              danger: true,
              run: async () => {
                const r = await rpc("JobService/CancelJob", { id });
                return stateName(r.job?.state) === "cancelled" ? `Cancelled job ${id}.` : `Asked job ${id}'s worker to stop.`;
              },
              after: () => void load(),
            }),
          { "data-test": "cancel" }),
        );
      }
      replace(
        body,
        h(
          "div",
          { class: "job-head" },
          h("h2", null, `Job ${id} `, badge(state, `st-${state}`), j.cancelRequested && state === "running" ? badge("cancel requested", "paused") : null),
          h("div", { class: "actions" }, actions),
        ),
        h(
          "dl",
          { class: "fields", "data-test": "fields" },
          field("queue", h("a", { href: href("jobs", { queue }) }, queue)),
          field("type", j.type ?? ""),
          field("attempts", `${j.attempt ?? 0} of ${j.maxAttempts ?? 0}`),
          field("priority", String(j.priority ?? 0)),
          field("created", when(j.createdAt)),
          field(state === "scheduled" || state === "retryable" ? "runs at" : "run at", when(j.runAt)),
          field("finished", when(j.finishedAt)),
          state === "running" ? field("lease expires", when(j.leaseExpiresAt)) : null,
          field(state === "running" ? "worker" : "last worker", j.workerId ? h("span", { class: "mono" }, j.workerId) : ""),
          j.leaseDuration ? field("lease duration", span(seconds(j.leaseDuration))) : null,
          j.idempotencyKey ? field("idempotency key", h("span", { class: "mono" }, j.idempotencyKey)) : null,
          j.concurrencyKey ? field("concurrency key", h("span", { class: "mono" }, j.concurrencyKey)) : null,
          j.orderingKey ? field("ordering key", h("span", { class: "mono" }, j.orderingKey)) : null,
        ),
        errorHistory(j),
        payload(j),
        headersTable(j),
      );
      errorLine(err, null);
    } catch (e) {
      errorLine(err, e);
      replace(body);
    }
  }
  void load();
  return () => {};
};
