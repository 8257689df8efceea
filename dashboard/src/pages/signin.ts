import { describe } from "../api.js";
import { h, replace } from "../dom.js";
import { signIn } from "../session.js";

/** Asks for a bearer token; `done` runs once the broker has accepted it (WhoAmI). */
export function signInPage(root: HTMLElement, reason: string, done: () => void): void {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true, placeholder: "token", "aria-label": "token", spellcheck: "false" });
  const err = h("div", { class: "error-line", role: "alert" }, reason);
  if (!reason) err.hidden = true;
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "data-test": "signin" },
    h("h2", null, "Sign in"),
    h("p", { class: "muted" }, "This broker requires a token. It is kept in this tab only (sessionStorage) and sent as a bearer header."),
    token,
    button,
    err,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      await signIn(token.value.trim());
      done();
    } catch (ex) {
      err.hidden = false;
      replace(err, ex instanceof Error && !("code" in ex) ? ex.message : describe(ex));
      button.disabled = false;
    }
  });
  replace(root, form);
  token.focus();
}
