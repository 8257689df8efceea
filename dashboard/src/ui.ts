import { describe } from "./api.js";
import { h, replace, type Child } from "./dom.js";
import { can, needs, type Scope } from "./session.js";

/**
 * Asks before an action, in the page (a <dialog>, no window.confirm), and
 * resolves to the answer. Escape or the cancel button says no.
 */
export function confirmDialog(opts: { title: string; body: Child; confirm: string; danger?: boolean }): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h("button", { class: opts.danger ? "danger" : "primary", type: "button", "data-test": "confirm-ok" }, opts.confirm);
    const no = h("button", { type: "button", "data-test": "confirm-cancel" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h3", { id: "confirm-title" }, opts.title),
      h("div", { class: "confirm-body" }, opts.body),
      h("div", { class: "confirm-actions" }, no, ok),
    );
    let answered = false;
    const done = (yes: boolean) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(yes);
    };
    ok.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", () => done(false));
    dialog.addEventListener("close", () => done(false));
    document.body.appendChild(dialog);
    dialog.showModal();
    no.focus();
  });
}

let toasts: HTMLElement | null = null;

/** A short message at the corner that goes away by itself (errors stay until clicked). */
export function toast(message: string, kind: "ok" | "error" = "ok"): void {
  if (!toasts) {
    toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(toasts);
  }
  const t = h("div", { class: `toast ${kind}`, "data-test": `toast-${kind}` }, message);
  t.addEventListener("click", () => t.remove());
  toasts.appendChild(t);
  if (kind === "ok") setTimeout(() => t.remove(), 6000);
}

/**
 * A button for an action that needs a scope: disabled, with the reason as
 * its tooltip, when the signed-in token lacks it. The broker checks again.
 */
export function actionButton(label: string, scope: Scope, queue: string | undefined, onClick: () => void, attrs: Record<string, string> = {}): HTMLButtonElement {
  const allowed = can(scope, queue);
  const b = h("button", { type: "button", ...attrs, disabled: !allowed, title: allowed ? null : needs(scope, queue) }, label);
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    if (!b.disabled) onClick();
  });
  return b;
}

/**
 * Confirm, run, report: every action on the dashboard goes through here,
 * so each asks first and says what happened (or why it was refused).
 */
export async function act(opts: { title: string; body: Child; confirm: string; danger?: boolean; run: () => Promise<string>; after?: () => void }): Promise<void> {
  if (!(await confirmDialog(opts))) return;
  try {
    toast(await opts.run(), "ok");
  } catch (err) {
    toast(describe(err), "error");
  }
  opts.after?.();
}

export function badge(text: string, cls: string): HTMLElement {
  return h("span", { class: `badge ${cls}` }, text);
}

/** A table with a header row; `empty` shows when there are no rows; `numeric` columns (by index) align right. */
export function table(head: Child[], rows: HTMLTableRowElement[], empty: string, attrs: Record<string, string> = {}, numeric: number[] = []): HTMLElement {
  // The wrapper scrolls sideways on a narrow window instead of widening the page.
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs,
      h("thead", null, h("tr", null, head.map((c, i) => h("th", { class: numeric.includes(i) ? "num" : null }, c)))),
      h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: head.length, class: "muted" }, empty))),
    ),
  );
}

/** A page's error line, replaced on every refresh. */
export function errorLine(el: HTMLElement, err: unknown): void {
  replace(el, err ? h("div", { class: "error-line", role: "alert" }, describe(err)) : null);
}
