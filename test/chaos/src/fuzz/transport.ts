/**
 * Sends one fuzz case over HTTP/1.1 (node:http) or HTTP/2 (node:http2,
 * prior knowledge, as gRPC clients connect) and reads what the broker says,
 * the way each protocol says it: grpc-status in trailers (or headers, for a
 * trailers-only answer), the trailers frame of gRPC-Web, Connect's JSON
 * error body or end-of-stream message. Every exchange has a deadline.
 */
import http from "node:http";
import http2 from "node:http2";
import type { FuzzCase } from "./cases.js";
import { FLAG_END_STREAM, FLAG_TRAILERS, connectCodeName, grpcCodeName, splitEnvelopes } from "./wire.js";

export interface Outcome {
  /** "OK", "INVALID_ARGUMENT", … ; "HTTP 415" when the broker answered with a bare HTTP status; or a transport event. */
  code: string;
  message: string;
  httpStatus: number;
  /** Where the code came from. */
  via: "trailers" | "headers" | "grpc-web trailers" | "connect body" | "connect end-stream" | "http" | "reset" | "timeout" | "connection" | "none" | "half-sent";
}

/** Longest wait for a complete request's answer (a Lease stream ends when we half-close). */
export const RESPONSE_TIMEOUT_MS = 10_000;
const MAX_BODY = 8 * 1024 * 1024;

/** HTTP/2 sessions to the broker, a few at a time, replaced when they fail. */
export class H2Pool {
  private sessions: http2.ClientHttp2Session[] = [];
  private next = 0;

  constructor(
    private readonly origin: string,
    private readonly size = 4,
  ) {}

  get(): http2.ClientHttp2Session {
    const i = this.next++ % this.size;
    let s = this.sessions[i];
    if (!s || s.closed || s.destroyed) {
      s = http2.connect(this.origin, { settings: { enablePush: false }, maxSessionMemory: 64 });
      s.on("error", () => {});
      s.on("goaway", () => s!.close());
      s.unref();
      this.sessions[i] = s;
    }
    return s;
  }

  close(): void {
    for (const s of this.sessions) s?.destroy();
    this.sessions = [];
  }
}

export class Transport {
  readonly h2: H2Pool;
  readonly agent: http.Agent;

  constructor(readonly origin: string) {
    this.h2 = new H2Pool(origin);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  send(c: FuzzCase): Promise<Outcome> {
    return c.protocol.http === 2 ? this.sendH2(c) : this.sendH1(c);
  }

  close(): void {
    this.h2.close();
    this.agent.destroy();
  }

  private sendH2(c: FuzzCase): Promise<Outcome> {
    const r = c.request;
    return new Promise((resolve) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.h2.get().request({ ":method": r.method, ":path": r.path, ...r.headers }, { endStream: false });
      } catch (err) {
        resolve({ code: "client refused", message: (err as Error).message, httpStatus: 0, via: "none" });
        return;
      }
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve(o);
      };
      const timer = setTimeout(() => {
        if (r.halfSend) finish({ code: "no answer", message: `nothing within ${r.halfSend.holdMs} ms`, httpStatus: 0, via: "half-sent" });
        else finish({ code: "TIMEOUT", message: `no answer within ${RESPONSE_TIMEOUT_MS} ms`, httpStatus: 0, via: "timeout" });
      }, r.halfSend ? r.halfSend.holdMs : RESPONSE_TIMEOUT_MS);
      stream.on("response", (h) => (headers = h));
      stream.on("trailers", (t) => (trailers = t));
      stream.on("data", (b: Buffer) => {
        size += b.length;
        if (size <= MAX_BODY) chunks.push(b);
      });
      stream.on("error", () => {});
      stream.on("close", () => {
        const o = interpret(c, Number(headers[":status"] ?? 0), headers, trailers, Buffer.concat(chunks));
        if (o) finish(o);
        else if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR)
          finish({ code: `RST_STREAM ${stream.rstCode}`, message: "stream reset without a status", httpStatus: 0, via: "reset" });
        else finish({ code: "no status", message: `stream closed without a status (HTTP ${headers[":status"] ?? "none"}, ${size} body bytes)`, httpStatus: Number(headers[":status"] ?? 0), via: "none" });
      });
      if (r.halfSend) stream.write(r.body.subarray(0, r.halfSend.bytes));
      else stream.end(r.body);
    });
  }

  private sendH1(c: FuzzCase): Promise<Outcome> {
    const r = c.request;
    const url = new URL(this.origin);
    return new Promise((resolve) => {
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.destroy();
        resolve(o);
      };
      const req = http.request({
        host: url.hostname,
        port: url.port,
        method: r.method,
        path: r.path,
        agent: r.halfSend ? false : this.agent,
        headers: { ...r.headers, "content-length": String(r.body.length) },
      });
      const timer = setTimeout(() => {
        if (r.halfSend) finish({ code: "no answer", message: `nothing within ${r.halfSend.holdMs} ms`, httpStatus: 0, via: "half-sent" });
        else finish({ code: "TIMEOUT", message: `no answer within ${RESPONSE_TIMEOUT_MS} ms`, httpStatus: 0, via: "timeout" });
      }, r.halfSend ? r.halfSend.holdMs : RESPONSE_TIMEOUT_MS);
      req.on("error", (err) => finish({ code: "connection error", message: err.message, httpStatus: 0, via: "connection" }));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (b: Buffer) => {
          size += b.length;
          if (size <= MAX_BODY) chunks.push(b);
        });
        res.on("error", () => {});
        res.on("end", () => {
          const o = interpret(c, res.statusCode ?? 0, res.headers, res.trailers, Buffer.concat(chunks));
          finish(o ?? { code: "no status", message: `HTTP ${res.statusCode} without a status`, httpStatus: res.statusCode ?? 0, via: "none" });
        });
        res.on("aborted", () => finish({ code: "connection error", message: "response aborted", httpStatus: res.statusCode ?? 0, via: "connection" }));
      });
      try {
        if (r.halfSend) req.write(r.body.subarray(0, r.halfSend.bytes));
        else req.end(r.body);
      } catch (err) {
        finish({ code: "client refused", message: (err as Error).message, httpStatus: 0, via: "none" });
      }
    });
  }
}

type Headers = Record<string, string | string[] | undefined>;

function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function grpcMessage(h: Headers): string {
  const m = header(h, "grpc-message") ?? "";
  try {
    return decodeURIComponent(m);
  } catch {
    return m;
  }
}

function connectError(body: Buffer): { code: string; message: string } | null {
  try {
    const j = JSON.parse(body.toString("utf8")) as { code?: unknown; message?: unknown; error?: { code?: unknown; message?: unknown } };
    const e = j.error ?? j;
    if (e.code === undefined) return null;
    return { code: connectCodeName(e.code), message: typeof e.message === "string" ? e.message : "" };
  } catch {
    return null;
  }
}

/** What the broker said, per protocol; null when it said nothing recognisable. */
function interpret(c: FuzzCase, status: number, headers: Headers, trailers: Headers, body: Buffer): Outcome | null {
  const family = c.protocol.family;
  const ct = header(headers, "content-type") ?? "";
  if (family === "grpc" || family === "grpc-web" || ct.startsWith("application/grpc")) {
    const t = header(trailers, "grpc-status");
    if (t !== undefined) return { code: grpcCodeName(t), message: grpcMessage(trailers), httpStatus: status, via: "trailers" };
    const h = header(headers, "grpc-status");
    if (h !== undefined) return { code: grpcCodeName(h), message: grpcMessage(headers), httpStatus: status, via: "headers" };
    if (ct.startsWith("application/grpc-web")) {
      for (const e of splitEnvelopes(body).envelopes) {
        if (!(e.flags & FLAG_TRAILERS)) continue;
        const fields: Headers = {};
        for (const line of e.payload.toString("utf8").split("\r\n")) {
          const i = line.indexOf(":");
          if (i > 0) fields[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        const s = header(fields, "grpc-status");
        if (s !== undefined) return { code: grpcCodeName(s), message: grpcMessage(fields), httpStatus: status, via: "grpc-web trailers" };
      }
    }
  }
  if (ct.startsWith("application/connect+")) {
    for (const e of splitEnvelopes(body).envelopes) {
      if (!(e.flags & FLAG_END_STREAM)) continue;
      const err = connectError(e.payload);
      return err ? { ...err, httpStatus: status, via: "connect end-stream" } : { code: "OK", message: "", httpStatus: status, via: "connect end-stream" };
    }
  }
  if (family === "connect" || ct.startsWith("application/json")) {
    if (status === 200 && !ct.startsWith("application/connect+")) return { code: "OK", message: "", httpStatus: status, via: "http" };
    const err = connectError(body);
    if (err) return { ...err, httpStatus: status, via: "connect body" };
  }
  if (status !== 0 && status !== 200) {
    return { code: `HTTP ${status}`, message: body.toString("utf8").slice(0, 200).trim(), httpStatus: status, via: "http" };
  }
  return null;
}
