import type { Route } from "../router.js";

/** A page draws into `root` and returns what stops its timers when the user leaves. */
export type Page = (root: HTMLElement, route: Route) => () => void;
