import type { Logger } from "../log.js";
import type { Metrics } from "../telemetry/metrics.js";
import { DashboardFiles, NOT_BUILT_HTML, SECURITY_HEADERS, dashboardCandidates } from "./dashboard.js";

/**
 * Plain HTTP on the gRPC port (HTTP/1.1 or HTTP/2):
 *   GET /metrics                Prometheus (telemetry/metrics.ts)
 *   GET /healthz                the process is up
 *   GET /readyz                 the database answers
 *   GET /                       the dashboard (dashboard/dist/index.html)
 *   GET /assets/*               its script, stylesheet and icon
 *   GET /dashboard/config.json  what the dashboard needs to know: {"authEnabled", "traceUrl"}, no secrets
 *
 * The dashboard calls AdminService and JobService over the Connect protocol
 * (JSON POSTs) on this port. No response here or there carries CORS
 * headers: another site's page cannot send those JSON POSTs (they need a
 * preflight nobody answers) nor read these responses.
 */
type Req = { method?: string; url?: string; headers?: Record<string, string | string[] | undefined> };
interface Res {
  statusCode: number;
  setHeader(k: string, v: string): unknown;
  end(): unknown;
  end(body: string | Uint8Array): unknown;
}

export interface HttpRoutesDeps {
  metrics: Metrics;
  ready: () => Promise<boolean>;
  log: Logger;
  /** Whether RPCs need a token, so the dashboard asks for one first. A function: a reloaded tokens file may change it. */
  authEnabled?: boolean | (() => boolean);
  /** JOBWIRE_TRACE_URL: a link template with {trace_id}, for the job page. "" shows the trace id without a link. */
  traceUrl?: string;
  /** Where the built dashboard is; found beside the install when unset (transport/dashboard.ts). */
  dashboardDir?: string;
}

export function httpRoutes(deps: HttpRoutesDeps) {
  const files = new DashboardFiles(dashboardCandidates(deps.dashboardDir));
  let warnedNotBuilt = false;
  const authEnabled = () => (typeof deps.authEnabled === "function" ? deps.authEnabled() : Boolean(deps.authEnabled));

  const send = (req: Req, res: Res, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) => {
    res.statusCode = status;
    res.setHeader("content-type", type);
    res.setHeader("x-content-type-options", "nosniff");
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (!headers["cache-control"]) res.setHeader("cache-control", "no-store");
    if (req.method === "HEAD" || status === 304) res.end();
    else res.end(body);
  };
  const page = (req: Req, res: Res, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) =>
    send(req, res, status, type, body, { ...SECURITY_HEADERS, ...headers });

  const serveFile = (req: Req, res: Res, urlPath: string): boolean => {
    const { built, file } = files.get(urlPath);
    if (!built) {
      if (!warnedNotBuilt) {
        warnedNotBuilt = true;
        deps.log.warn("the dashboard is not built: GET / explains; run `npm run build`", { looked_in: dashboardCandidates(deps.dashboardDir) });
      }
      if (urlPath === "/") page(req, res, 503, "text/html; charset=utf-8", NOT_BUILT_HTML);
      else page(req, res, 404, "text/plain; charset=utf-8", "not found\n");
      return true;
    }
    if (!file) {
      if (!urlPath.startsWith("/assets/")) return false;
      page(req, res, 404, "text/plain; charset=utf-8", "not found\n");
      return true;
    }
    // index.html is checked on every load (no-cache, with its ETag), so a new build shows at once;
    // assets have content-hashed names and never change under one name.
    const cache = file.immutable ? "public, max-age=31536000, immutable" : "no-cache";
    if (req.headers?.["if-none-match"] === file.etag) {
      page(req, res, 304, file.type, "", { etag: file.etag, "cache-control": cache });
      return true;
    }
    page(req, res, 200, file.type, file.body, { etag: file.etag, "cache-control": cache });
    return true;
  };

  return (req: Req, res: Res): boolean => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const path = (req.url ?? "/").split("?")[0]!;
    switch (path) {
      case "/metrics":
        // Answers even with the database down (jobwire_database_up 0).
        deps.metrics.render().then(
          (m) => send(req, res, 200, m.contentType, m.body),
          (err) => {
            deps.log.error("metrics scrape failed", { err });
            send(req, res, 500, "text/plain", "metrics failed\n");
          },
        );
        return true;
      case "/healthz":
        send(req, res, 200, "text/plain", "ok\n");
        return true;
      case "/readyz":
        deps.ready().then(
          (ok) => send(req, res, ok ? 200 : 503, "text/plain", ok ? "ready\n" : "database unavailable\n"),
          () => send(req, res, 503, "text/plain", "database unavailable\n"),
        );
        return true;
      case "/dashboard/config.json":
        page(req, res, 200, "application/json", JSON.stringify({ authEnabled: authEnabled(), traceUrl: deps.traceUrl ?? "" }));
        return true;
      case "/":
      case "/index.html":
      case "/dashboard":
        return serveFile(req, res, "/");
      default:
        return path.startsWith("/assets/") ? serveFile(req, res, path) : false;
    }
  };
}
