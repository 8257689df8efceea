import type { Logger } from "../log.js";
import type { Metrics } from "../telemetry/metrics.js";
import { DASHBOARD_HTML } from "./dashboard.js";

/**
 * Plain HTTP on the gRPC port (HTTP/1.1 or HTTP/2):
 *   GET /metrics   Prometheus (telemetry/metrics.ts)
 *   GET /healthz   the process is up
 *   GET /readyz    the database answers
 *   GET /          the dashboard (it calls AdminService over the Connect protocol)
 */
type Req = { method?: string; url?: string };
type Res = { statusCode: number; setHeader(k: string, v: string): unknown; end(body: string): unknown };

export function httpRoutes(deps: { metrics: Metrics; ready: () => Promise<boolean>; log: Logger }) {
  const send = (res: Res, status: number, type: string, body: string) => {
    res.statusCode = status;
    res.setHeader("content-type", type);
    res.setHeader("cache-control", "no-store");
    res.end(body);
  };
  return (req: Req, res: Res): boolean => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/metrics":
        // Answers even with the database down (jobwire_database_up 0).
        deps.metrics.render().then(
          (m) => send(res, 200, m.contentType, m.body),
          (err) => {
            deps.log.error("metrics scrape failed", { err });
            send(res, 500, "text/plain", "metrics failed\n");
          },
        );
        return true;
      case "/healthz":
        send(res, 200, "text/plain", "ok\n");
        return true;
      case "/readyz":
        deps.ready().then(
          (ok) => send(res, ok ? 200 : 503, "text/plain", ok ? "ready\n" : "database unavailable\n"),
          () => send(res, 503, "text/plain", "database unavailable\n"),
        );
        return true;
      case "/":
      case "/dashboard":
        send(res, 200, "text/html; charset=utf-8", DASHBOARD_HTML);
        return true;
      default:
        return false;
    }
  };
}
