import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { leanStream } from "./client-stream.js";
import { MessageSplitter, frame } from "./envelope.js";
import { errorTrailers } from "./status.js";

/**
 * leanStream against real HTTP/2 servers on loopback, doing what the
 * broker's Lease stream does and what a broken network does.
 */

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** The servers' TCP connections, as accepted: a test may cut one as a dying process would. */
const connections: net.Socket[] = [];

async function server(onStream: (s: http2.ServerHttp2Stream) => void): Promise<number> {
  const srv = http2.createServer();
  srv.on("connection", (c: net.Socket) => connections.push(c));
  const sessions = new Set<http2.ServerHttp2Session>();
  srv.on("session", (s) => sessions.add(s));
  srv.on("stream", onStream);
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  );
  return (srv.address() as net.AddressInfo).port;
}

function sessions(port: number, ping = { pingIntervalMs: 60_000, pingTimeoutMs: 60_000 }, abort = true): Http2SessionManager {
  const sm = new Http2SessionManager(`http://127.0.0.1:${port}`, ping);
  if (abort) closers.push(() => sm.abort());
  return sm;
}

const opts = (sm: Http2SessionManager) => ({ sessions: sm, readMaxBytes: 1 << 24, writeMaxBytes: 1 << 20, userAgent: "test" });
const OK_HEADERS = { ":status": 200, "content-type": "application/grpc+proto" };

/** Requests the test pushes, ending when it says. */
function requestQueue() {
  const items: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const iterable: AsyncIterable<Uint8Array> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (items.length === 0 && !ended) await new Promise<void>((r) => (wake = r));
        const v = items.shift();
        if (v === undefined) return;
        yield v;
      }
    },
  };
  return {
    iterable,
    push: (b: Uint8Array) => {
      items.push(b);
      wake?.();
    },
    end: () => {
      ended = true;
      wake?.();
    },
  };
}

const same = (b: Uint8Array) => b;
const copy = (b: Uint8Array) => b.slice();

async function failure(it: AsyncIterator<unknown>): Promise<ConnectError> {
  for (;;) {
    try {
      if ((await it.next()).done) throw new Error("the stream ended without an error");
    } catch (err) {
      if (err instanceof ConnectError) return err;
      throw err;
    }
  }
}

describe("leanStream", () => {
  it("writes requests as they come, reads every message, half-closes, and ends on grpc-status 0", async () => {
    const port = await server((s) => {
      const split = new MessageSplitter(1 << 20);
      s.respond(OK_HEADERS, { waitForTrailers: true });
      s.on("data", (chunk: Buffer) => {
        split.push(chunk);
        for (let m = split.next(); m !== undefined; m = split.next()) s.write(frame(new Uint8Array([...m, 0xff])));
      });
      s.on("end", () => s.end());
      s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
    });
    const q = requestQueue();
    let header: Headers | undefined;
    const it = leanStream(opts(sessions(port)), "/x.S/M", q.iterable, same, copy, { onHeader: (h) => (header = h) })[Symbol.asyncIterator]();
    q.push(new Uint8Array([1]));
    expect([...((await it.next()).value as Uint8Array)]).toEqual([1, 0xff]);
    expect(header?.get("content-type")).toBe("application/grpc+proto");
    q.push(new Uint8Array(70_000).fill(2)); // straddles HTTP/2 frames both ways
    expect(((await it.next()).value as Uint8Array).length).toBe(70_001);
    q.end();
    expect((await it.next()).done).toBe(true);
  });

  it("turns a trailers-only status into its ConnectError, with details and metadata, before any header callback", async () => {
    const err = new ConnectError("refused: ü%", Code.PermissionDenied, { "x-why": "because" });
    err.details = [{ type: "x.Detail", value: new Uint8Array([1, 2, 3]) }];
    const port = await server((s) => s.respond({ ...OK_HEADERS, ...errorTrailers(err) }, { endStream: true }));
    let headerSeen = false;
    const it = leanStream(opts(sessions(port)), "/x.S/M", requestQueue().iterable, same, copy, { onHeader: () => (headerSeen = true) });
    const e = await failure(it[Symbol.asyncIterator]());
    expect([e.code, e.rawMessage, e.metadata.get("x-why")]).toEqual([Code.PermissionDenied, "refused: ü%", "because"]);
    expect(e.details).toEqual([{ type: "x.Detail", value: new Uint8Array([1, 2, 3]) }]);
    expect(headerSeen).toBe(false);
  });

  it("cancels the call with RST_STREAM CANCEL when the signal aborts, and says so", async () => {
    let closed!: (rstCode: number) => void;
    const serverSaw = new Promise<number>((resolve) => (closed = resolve));
    const port = await server((s) => {
      s.respond(OK_HEADERS);
      s.write(frame(new Uint8Array([7])));
      s.on("close", () => closed(s.rstCode));
    });
    const ac = new AbortController();
    const it = leanStream(opts(sessions(port)), "/x.S/M", requestQueue().iterable, same, copy, { signal: ac.signal })[Symbol.asyncIterator]();
    expect([...((await it.next()).value as Uint8Array)]).toEqual([7]);
    ac.abort(new Error("enough"));
    const e = await failure(it);
    expect(e.code).toBe(Code.Canceled);
    expect(await serverSaw).toBe(http2.constants.NGHTTP2_CANCEL);
  });

  it("holds the server back through HTTP/2 flow control while nothing is read", async () => {
    let written = 0;
    let serverStream: http2.ServerHttp2Stream | undefined;
    let blocked!: () => void;
    const stalled = new Promise<void>((resolve) => (blocked = resolve));
    const message = frame(new Uint8Array(256 * 1024));
    const total = 200; // 50 MiB, far beyond every window and buffer between the two
    const port = await server((s) => {
      serverStream = s;
      s.respond(OK_HEADERS, { waitForTrailers: true });
      s.on("wantTrailers", () => s.sendTrailers({ "grpc-status": "0" }));
      const more = () => {
        while (written < total) {
          written++;
          if (!s.write(message)) {
            blocked();
            s.once("drain", more);
            return;
          }
        }
        s.end();
      };
      more();
    });
    const it = leanStream(opts(sessions(port)), "/x.S/M", requestQueue().iterable, same, (b) => b.length)[Symbol.asyncIterator]();
    expect((await it.next()).value).toBe(256 * 1024);
    await stalled;
    // The reader took one message and stops. Each PING round trip lets the
    // client answer what came before it: a client that kept reading (and so
    // granting window) lets the server write on a message every few; this
    // one, once its buffers are full, stops it for good.
    const ping = () => new Promise<void>((resolve) => serverStream!.session!.ping(() => resolve()));
    for (let i = 0; i < 20; i++) await ping();
    const stuckAt = written;
    for (let i = 0; i < 30; i++) await ping();
    expect(written).toBe(stuckAt);
    expect(written).toBeLessThan(total / 2);
    let n = 1;
    while (!(await it.next()).done) n++;
    expect(n).toBe(total);
  });

  it("fails, UNAVAILABLE, when the connection stops answering PINGs, so the worker reconnects", async () => {
    const port = await server((s) => {
      s.respond(OK_HEADERS);
      s.write(frame(new Uint8Array([1])));
    });
    // A proxy that can stop passing bytes, as a vanished host or a dropped network does.
    const sockets: net.Socket[] = [];
    const proxy = net.createServer((client) => {
      const upstream = net.connect(port, "127.0.0.1");
      sockets.push(client, upstream);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    closers.push(() => {
      for (const s of sockets) s.destroy();
      proxy.close();
    });
    // Not aborted afterwards: connect-node's manager, once a PING has timed
    // out, lets the dead session's late "error" event go unhandled if it is
    // aborted before that session's socket closes (with connect-es's own
    // streams too). The test ends with the manager in its error state.
    const sm = sessions((proxy.address() as net.AddressInfo).port, { pingIntervalMs: 50, pingTimeoutMs: 100 }, false);
    const it = leanStream(opts(sm), "/x.S/M", requestQueue().iterable, same, copy)[Symbol.asyncIterator]();
    expect([...((await it.next()).value as Uint8Array)]).toEqual([1]);
    for (const s of sockets) {
      s.unpipe();
      s.pause();
    }
    const e = await failure(it);
    expect(Code[e.code]).toBe(Code[Code.Unavailable]);
  });

  it("ends at the response's trailers though its own requests are still open, and closes the stream", async () => {
    // The broker answers (a refusal, a drain) while the worker still sends.
    // Node's compatibility API, which connect-node serves with, keeps such a
    // stream open after the trailers until the client closes its side: the
    // call is over at the trailers, not when the broker gives up on the
    // half-open stream (1 s later, in server.ts).
    const srv = http2.createServer((req, res) => {
      req.resume(); // reading the requests, as a Lease handler does
      res.writeHead(200, { "content-type": "application/grpc+proto" });
      res.write(frame(new Uint8Array([4])));
      res.addTrailers({ "grpc-status": "0" });
      res.end();
    });
    let closed!: (rstCode: number) => void;
    const serverSaw = new Promise<number>((resolve) => (closed = resolve));
    srv.on("stream", (s) => s.on("close", () => closed(s.rstCode)));
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    closers.push(() => new Promise<void>((resolve) => srv.close(() => resolve())));
    const q = requestQueue();
    const sm = sessions((srv.address() as net.AddressInfo).port);
    const it = leanStream(opts(sm), "/x.S/M", q.iterable, same, copy)[Symbol.asyncIterator]();
    q.push(new Uint8Array([1]));
    expect([...((await it.next()).value as Uint8Array)]).toEqual([4]);
    expect((await it.next()).done).toBe(true);
    // The client closed the stream (NO_ERROR), its requests never having ended.
    expect(await serverSaw).toBe(http2.constants.NGHTTP2_NO_ERROR);
  });

  it("fails, UNAVAILABLE and not CANCELED, when the connection drops mid-stream", async () => {
    const port = await server((s) => {
      s.respond(OK_HEADERS);
      s.write(frame(new Uint8Array([1])));
    });
    const it = leanStream(opts(sessions(port)), "/x.S/M", requestQueue().iterable, same, copy)[Symbol.asyncIterator]();
    expect([...((await it.next()).value as Uint8Array)]).toEqual([1]);
    // The broker's process dies: its socket closes with no GOAWAY and no status.
    connections.at(-1)!.destroy();
    const e = await failure(it);
    expect(Code[e.code]).toBe(Code[Code.Unavailable]);
  });
});
