import type http from "node:http";
import type http2 from "node:http2";

/**
 * Answers a request the broker refuses before reading its body (no
 * credentials, unknown ones, or a scope the caller lacks), in the shape its
 * protocol expects, and drains the body unread:
 *   gRPC        HTTP 200, trailers-only: grpc-status and grpc-message in the headers
 *   gRPC-Web    the same, in HTTP/1.1 headers
 *   Connect     unary: HTTP 401 or 403 with {"code", "message"}; streaming:
 *               HTTP 200 with the end-of-stream message carrying the error
 *   plain HTTP  401 (with WWW-Authenticate: Bearer) or 403, as text
 */
export type RefusalCode = "unauthenticated" | "permission_denied";

const GRPC_STATUS: Record<RefusalCode, string> = { unauthenticated: "16", permission_denied: "7" };
const HTTP_STATUS: Record<RefusalCode, number> = { unauthenticated: 401, permission_denied: 403 };

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export function refuse(req: Req, res: Res, code: RefusalCode, message: string): void {
  const ct = String(req.headers["content-type"] ?? "");
  req.resume();
  res.setHeader("cache-control", "no-store");
  if (ct.startsWith("application/grpc")) {
    // application/grpc, application/grpc+proto, application/grpc-web(+proto|-text)
    const headers = { "content-type": ct, "cache-control": "no-store", "grpc-status": GRPC_STATUS[code], "grpc-message": encodeURIComponent(message) };
    if ("stream" in res) {
      // HTTP/2: one HEADERS frame with END_STREAM, as gRPC defines a
      // trailers-only response. writeHead() then end() sends the headers
      // and then an empty DATA frame with END_STREAM, which connect-es
      // and connect-go read but grpc-core (grpcio, grpc-java's netty
      // aside) does not: Python saw UNKNOWN "Stream removed".
      res.stream.respond({ ":status": 200, ...headers }, { endStream: true });
      return;
    }
    res.writeHead(200, headers);
    res.end();
    return;
  }
  if (ct.startsWith("application/connect+")) {
    const body = Buffer.from(JSON.stringify({ error: { code, message } }));
    const frame = Buffer.alloc(5 + body.length);
    frame[0] = 0b10; // end-of-stream
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    res.writeHead(200, { "content-type": ct });
    res.end(frame);
    return;
  }
  if (req.method === "POST" && (ct.startsWith("application/json") || ct.startsWith("application/proto"))) {
    res.writeHead(HTTP_STATUS[code], { "content-type": "application/json" });
    res.end(JSON.stringify({ code, message }));
    return;
  }
  res.writeHead(HTTP_STATUS[code], {
    "content-type": "text/plain; charset=utf-8",
    ...(code === "unauthenticated" ? { "www-authenticate": 'Bearer realm="jobwire"' } : {}),
  });
  res.end(`${message}\n`);
}
