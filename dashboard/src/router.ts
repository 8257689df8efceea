/**
 * Hash routes (#/jobs?queue=emails&state=dead), so the broker serves one
 * index.html and every page survives a reload and the back button.
 */
export interface Route {
  /** "queues", "jobs", "job", "schedules", "workers", "signin" */
  page: string;
  /** The job id on "job". */
  id: string;
  params: URLSearchParams;
}

export function parse(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = (q < 0 ? raw : raw.slice(0, q)).split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  if (path[0] === "jobs" && path[1]) return { page: "job", id: path[1], params };
  return { page: path[0] || "queues", id: "", params };
}

export function href(page: string, params?: Record<string, string | string[] | undefined> | URLSearchParams): string {
  const p = params instanceof URLSearchParams ? params : new URLSearchParams();
  if (!(params instanceof URLSearchParams) && params) {
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v)) for (const x of v) p.append(k, x);
      else if (v) p.set(k, v);
    }
  }
  const qs = p.toString();
  return `#/${page}${qs ? `?${qs}` : ""}`;
}

export function jobHref(id: string): string {
  return `#/jobs/${encodeURIComponent(id)}`;
}

export function go(to: string): void {
  if (location.hash === to) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = to;
}
