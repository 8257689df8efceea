import { rm, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { LeaseRequestSchema, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { startEmbedded } from "@jobwire/server";
import { Channel, createTestDatabase, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeCerts, type Certs } from "./certs.js";
import { expectCode, uniqueQueue } from "./helpers.js";

/**
 * Security (issue 12) over real gRPC, gRPC-Web and Connect: scoped tokens
 * from a tokens file, queue patterns, rotation without a restart, TLS and
 * mTLS, /metrics behind the read scope, and no SQL for a refused call.
 */
const SECRET = {
  enqueue: "enqueue-secret-0123456789",
  work: "work-secret-0123456789",
  read: "read-secret-0123456789",
  admin: "admin-secret-0123456789",
  billing: "billing-secret-0123456789",
};
const TOKENS_YAML = `tokens:
${(["enqueue", "work", "read", "admin"] as const).map((s) => `  - name: only-${s}\n    token: "${SECRET[s]}"\n    scopes: [${s}]\n`).join("")}  - name: billing-team
    token: "${SECRET.billing}"
    scopes: [enqueue, read, admin]
    queues: ["billing.*"]
`;

let certs: Certs;
let tokensFile: string;
let tb: TestBroker;
beforeAll(async () => {
  certs = makeCerts();
  tokensFile = path.join(certs.dir, "tokens.yaml");
  await writeFile(tokensFile, TOKENS_YAML);
  tb = await startTestBroker({ authFile: tokensFile, metricsAuth: true });
});
afterAll(async () => {
  await tb?.stop();
  await rm(certs.dir, { recursive: true, force: true });
});

function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

function clients(url: string, token: string | null, kind: "grpc" | "grpc-web" | "connect" = "grpc", extra: object = {}) {
  const opts = { baseUrl: url, interceptors: token ? [bearer(token)] : [], ...extra };
  const transport =
    kind === "grpc" ? createGrpcTransport(opts) : kind === "grpc-web" ? createGrpcWebTransport({ ...opts, httpVersion: "1.1" }) : createConnectTransport({ ...opts, httpVersion: "1.1" });
  return { jobs: createClient(JobService, transport), workers: createClient(WorkerService, transport), admin: createClient(AdminService, transport) };
}

/** Calls any RPC with an empty request; resolves to the code ("ok" when it passed). */
async function call(c: ReturnType<typeof clients>, service: DescService, method: DescMethod): Promise<string> {
  const client = (service === JobService ? c.jobs : service === WorkerService ? c.workers : c.admin) as unknown as Client<DescService>;
  try {
    if (method.methodKind === "bidi_streaming") {
      const requests = new Channel<never>();
      requests.push(create(LeaseRequestSchema, { msg: { case: "open", value: { queues: ["scope-probe"], maxInFlight: 1 } } }) as never);
      const it = (client as unknown as Record<string, (r: unknown) => AsyncIterable<unknown>>)[method.localName]!(requests)[Symbol.asyncIterator]();
      await it.next();
      requests.close();
      return "ok";
    }
    await (client as unknown as Record<string, (r: unknown) => Promise<unknown>>)[method.localName]!(create(method.input, {}));
    return "ok";
  } catch (err) {
    return Code[ConnectError.from(err).code]!;
  }
}

describe("scopes", () => {
  const SCOPE_OF: Record<string, string[]> = {
    Enqueue: ["enqueue"],
    GetJob: ["read", "enqueue"],
    CancelJob: ["admin"],
    Lease: ["work"],
    Ack: ["work"],
    Nack: ["work"],
    Heartbeat: ["work"],
    Replay: ["admin"],
    ListJobs: ["read"],
    GetQueueStats: ["read"],
    SetQueueConfig: ["admin"],
    GetQueueConfig: ["read"],
    PauseQueue: ["admin"],
    ResumeQueue: ["admin"],
    SetSchedule: ["admin"],
    DeleteSchedule: ["admin"],
    ListSchedules: ["read"],
    ListWorkers: ["read"],
    GetQueueHistory: ["read"],
    WhoAmI: ["enqueue", "work", "read", "admin"],
  };

  it("lets every RPC through for its scope, and answers PERMISSION_DENIED for every other scope (a new RPC without a scope fails this)", async () => {
    const rpcs = [JobService, WorkerService, AdminService].flatMap((s) => s.methods.map((m) => [s, m] as const));
    for (const [, m] of rpcs) expect(SCOPE_OF[m.name], `${m.name} has no row in this test`).toBeDefined();
    for (const scope of ["enqueue", "work", "read", "admin"] as const) {
      const c = clients(tb.url, SECRET[scope]);
      for (const [s, m] of rpcs) {
        const code = await call(c, s, m);
        if (SCOPE_OF[m.name]!.includes(scope)) expect(code, `${scope} -> ${m.name}`).not.toMatch(/^(PermissionDenied|Unauthenticated)$/);
        else expect(code, `${scope} -> ${m.name}`).toBe("PermissionDenied");
      }
    }
  });

  it("answers UNAUTHENTICATED without a token, or with an unknown one, on every RPC", async () => {
    const rpcs = [JobService, WorkerService, AdminService].flatMap((s) => s.methods.map((m) => [s, m] as const));
    for (const token of [null, "not-a-known-token-at-all"]) {
      const c = clients(tb.url, token);
      for (const [s, m] of rpcs) expect(await call(c, s, m), `${token} -> ${m.name}`).toBe("Unauthenticated");
    }
  });

  it("names the scope the caller lacked, over gRPC, gRPC-Web and Connect alike", async () => {
    for (const kind of ["grpc", "grpc-web", "connect"] as const) {
      const c = clients(tb.url, SECRET.read, kind);
      const err = await expectCode(c.admin.replay({ jobIds: ["1"] }), Code.PermissionDenied);
      expect(err.rawMessage, kind).toBe("token only-read lacks scope admin (needed by AdminService.Replay)");
      await expectCode(clients(tb.url, null, kind).admin.getQueueStats({}), Code.Unauthenticated);
    }
  });

  it("keeps a team to its queues: PERMISSION_DENIED naming the queue, and lists only theirs", async () => {
    const billing = clients(tb.url, SECRET.billing);
    const enq = clients(tb.url, SECRET.enqueue);
    const mine = `billing.${uniqueQueue("inv")}`;
    const theirs = uniqueQueue("emails");
    await billing.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue: mine, type: "t" })] });
    const [other] = (await enq.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue: theirs, type: "t" })] })).results;
    const denied = await expectCode(billing.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue: theirs, type: "t" })] }), Code.PermissionDenied, "jobs[0].queue");
    expect(denied.rawMessage).toContain(`token billing-team may not touch queue ${theirs} (its queues: billing.*)`);
    await expectCode(billing.jobs.getJob({ id: other!.jobId }), Code.PermissionDenied, theirs);
    await expectCode(billing.jobs.cancelJob({ id: other!.jobId }), Code.PermissionDenied, theirs);
    await expectCode(billing.admin.pauseQueue({ queue: theirs }), Code.PermissionDenied, "queue");
    await expectCode(billing.admin.listJobs({}), Code.PermissionDenied, "name one");
    expect((await billing.admin.listJobs({ queue: mine })).jobs).toHaveLength(1);
    const stats = await billing.admin.getQueueStats({});
    expect(stats.queues.map((q) => q.queue)).toContain(mine);
    expect(stats.queues.every((q) => q.queue.startsWith("billing."))).toBe(true);
    // A reader of every queue still sees both.
    expect((await clients(tb.url, SECRET.read).admin.getQueueStats({})).queues.map((q) => q.queue)).toEqual(expect.arrayContaining([mine, theirs]));
  });

  it("says who the caller is", async () => {
    const me = await clients(tb.url, SECRET.billing).admin.whoAmI({});
    expect(me).toMatchObject({ authEnabled: true, name: "billing-team", queues: ["billing.*"] });
    expect([...me.scopes].sort()).toEqual(["admin", "enqueue", "read"]);
  });

  it("keeps reflection (buf curl) behind a token: any scope will do", async () => {
    const res = await reflect(tb.url, null);
    expect(res.status).toBe("16");
    expect((await reflect(tb.url, SECRET.work)).status).toBe("0");
  });
});

describe("rotation", () => {
  it("takes a new tokens file on reload (SIGHUP) and when the file changes, and keeps the old one when the new does not parse", async () => {
    const rotated = "rotated-secret-0123456789";
    await writeFile(tokensFile, `${TOKENS_YAML}  - name: rotated\n    token: "${rotated}"\n    scopes: [read]\n`);
    await tb.app.reload(); // what SIGHUP does
    expect((await clients(tb.url, rotated).admin.whoAmI({})).name).toBe("rotated");
    // On change, without a signal: the file watch reloads it.
    await writeFile(tokensFile, TOKENS_YAML);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const code = await call(clients(tb.url, rotated), AdminService, AdminService.method.whoAmI);
      if (code === "Unauthenticated") break;
      if (Date.now() > deadline) throw new Error("the changed tokens file was not picked up");
      await new Promise((r) => setTimeout(r, 50));
    }
    await writeFile(tokensFile, "tokens: [ {");
    await tb.app.reload();
    expect((await clients(tb.url, SECRET.read).admin.whoAmI({})).name).toBe("only-read");
    await writeFile(tokensFile, TOKENS_YAML);
    await tb.app.reload();
  });
});

describe("HTTP endpoints under auth", () => {
  it("puts /metrics behind the read scope with JOBWIRE_METRICS_AUTH, and leaves health checks open", async () => {
    expect((await fetch(`${tb.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${tb.url}/metrics`, { headers: { authorization: `Bearer ${SECRET.work}` } })).status).toBe(403);
    const ok = await fetch(`${tb.url}/metrics`, { headers: { authorization: `Bearer ${SECRET.read}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("jobwire_database_up 1");
    expect((await fetch(`${tb.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${tb.url}/readyz`)).status).toBe(200);
  });
});

describe("a refused call", () => {
  it("is a gRPC trailers-only response: one HEADERS frame with END_STREAM, as grpc-core requires", async () => {
    // Headers, then an empty DATA frame with END_STREAM, reached grpcio as
    // UNKNOWN "Stream removed": every refusal lost its code in Python.
    const session = http2.connect(tb.url);
    try {
      const seen = await new Promise<{ status: unknown; endStream: boolean }>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/jobwire.v1.JobService/Enqueue", "content-type": "application/grpc", te: "trailers" });
        req.on("response", (h, flags) => resolve({ status: h["grpc-status"], endStream: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 }));
        req.on("error", reject);
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
      expect(seen).toEqual({ status: "16", endStream: true });
    } finally {
      session.close();
    }
  });

  it("runs no SQL at all (pg_stat_statements on a Postgres of its own)", async () => {
    const dir = path.join(certs.dir, "pg");
    const server = await startEmbedded({ dir, port: 0, unsafeFast: true, settings: { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track": "all" } });
    const admin = new pg.Client({ connectionString: server.url("postgres") });
    await admin.connect();
    await admin.query("CREATE EXTENSION pg_stat_statements");
    const broker = await startTestBroker({ authFile: tokensFile }, { databaseUrl: server.url("jobwire") });
    try {
      const rpcs = [JobService, WorkerService, AdminService].flatMap((s) => s.methods.map((m) => [s, m] as const));
      // The broker's own loops would run SQL on their timers: stopped (each
      // stop waits for a pass in progress), nothing runs SQL but the calls.
      for (const loop of Object.values(broker.app.loops)) await loop.stop();
      await admin.query("SELECT pg_stat_statements_reset()");
      for (const token of [null, "unknown-token-0123456789", SECRET.work]) {
        const c = clients(broker.url, token);
        for (const [s, m] of rpcs) if (token !== SECRET.work || !["Lease", "Ack", "Nack", "Heartbeat", "WhoAmI"].includes(m.name)) await call(c, s, m);
      }
      const { rows } = await admin.query<{ query: string }>(
        `SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'jobwire') AND calls > 0`,
      );
      expect(rows.map((r) => r.query).filter((q) => !/pg_stat_statements/.test(q))).toEqual([]);
    } finally {
      await broker.stop();
      await admin.end();
      await server.stop();
    }
  });
});

describe("TLS", () => {
  it("serves gRPC, gRPC-Web, Connect, the dashboard and /metrics over TLS on one port", async () => {
    const broker = await startTestBroker({ tlsCert: certs.serverCert, tlsKey: certs.serverKey }, { databaseUrl: await createTestDatabase() });
    try {
      expect(broker.url).toMatch(/^https:\/\//);
      const url = broker.url.replace("127.0.0.1", "localhost");
      const opts = { nodeOptions: { ca: certs.ca } };
      const queue = uniqueQueue("tls");
      for (const kind of ["grpc", "grpc-web", "connect"] as const) {
        const c = clients(url, null, kind, opts);
        const r = await c.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t" })] });
        expect(r.results).toHaveLength(1);
      }
      const s = new TestLeaseStream(clients(url, null, "grpc", opts).workers, { queues: [queue], maxInFlight: 3 });
      const leased = await s.take(3);
      expect((await clients(url, null, "grpc", opts).workers.ack({ leaseTokens: leased.map((l) => l.leaseToken) })).lostLeaseTokens).toEqual([]);
      s.kill();
      for (const p of ["/metrics", "/"]) expect((await httpsGet(url + p, { ca: certs.ca })).status, p).toBe(200);
      // ALPN: HTTP/2 and HTTP/1.1 both offered.
      const proto = await alpn(url, certs.ca, ["h2", "http/1.1"]);
      expect(proto).toBe("h2");
    } finally {
      await broker.stop();
    }
  });

  it("requires a client certificate with mTLS, and maps its subject to scopes from the tokens file", async () => {
    const fleet = certs.client("/CN=worker-fleet/O=acme");
    const stranger = certs.client("/CN=stranger");
    const file = path.join(certs.dir, "mtls.yaml");
    await writeFile(file, `certificates:\n  - name: fleet\n    subject: "CN=worker-fleet"\n    scopes: [work, enqueue]\n`);
    const broker = await startTestBroker(
      { tlsCert: certs.serverCert, tlsKey: certs.serverKey, tlsClientCa: certs.caFile, authFile: file },
      { databaseUrl: await createTestDatabase() },
    );
    try {
      const url = broker.url.replace("127.0.0.1", "localhost");
      // No certificate: the handshake fails (the broker sends the "certificate required" alert).
      const bare = clients(url, null, "grpc", { nodeOptions: { ca: certs.ca } });
      await expect(bare.jobs.getJob({ id: "1" })).rejects.toThrow(/certificate required/);
      const c = clients(url, null, "grpc", { nodeOptions: { ca: certs.ca, cert: fleet.cert, key: fleet.key } });
      const queue = uniqueQueue("mtls");
      await c.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t" })] });
      const s = new TestLeaseStream(c.workers, { queues: [queue], maxInFlight: 1 });
      const [l] = await s.take(1);
      expect((await c.workers.ack({ leaseTokens: [l!.leaseToken] })).lostLeaseTokens).toEqual([]);
      s.kill();
      expect((await c.admin.whoAmI({})).name).toBe("fleet");
      await expectCode(c.admin.replay({ jobIds: ["1"] }), Code.PermissionDenied, "certificate fleet lacks scope admin");
      // A certificate the CA signed but the file does not name: authenticated by TLS, unknown to jobwire.
      const s2 = clients(url, null, "grpc", { nodeOptions: { ca: certs.ca, cert: stranger.cert, key: stranger.key } });
      await expectCode(s2.jobs.getJob({ id: "1" }), Code.Unauthenticated);
    } finally {
      await broker.stop();
    }
  });

  it("reloads its certificate on SIGHUP without dropping open streams", async () => {
    const broker = await startTestBroker({ tlsCert: certs.serverCert, tlsKey: certs.serverKey }, { databaseUrl: await createTestDatabase() });
    try {
      const url = broker.url.replace("127.0.0.1", "localhost");
      const c = clients(url, null, "grpc", { nodeOptions: { ca: certs.ca } });
      const queue = uniqueQueue("rotate");
      const s = new TestLeaseStream(c.workers, { queues: [queue], maxInFlight: 5 });
      await c.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t" })] });
      await s.take(1);
      const before = await fingerprint(url, certs.ca);
      const after = certs.rotateServer();
      await broker.app.reload();
      expect(await fingerprint(url, certs.ca)).toBe(after.split("=")[1]!.replace(/:/g, "").toLowerCase());
      expect(before).not.toBe(await fingerprint(url, certs.ca));
      // The stream opened before the rotation still delivers.
      await c.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t" })] });
      expect(await s.take(1)).toHaveLength(1);
      s.kill();
    } finally {
      await broker.stop();
    }
  });
});

/** A gRPC reflection call (what buf curl sends first), by hand over HTTP/2; returns grpc-status. */
async function reflect(url: string, token: string | null): Promise<{ status: string }> {
  const session = http2.connect(url);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "content-type": "application/grpc",
        te: "trailers",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      });
      let status = "";
      req.on("response", (h) => (status = String(h["grpc-status"] ?? status)));
      req.on("trailers", (t) => (status = String(t["grpc-status"] ?? status)));
      req.on("error", reject);
      req.on("close", () => resolve({ status }));
      req.on("data", () => {});
      // list_services = "" (field 7), framed.
      const msg = Buffer.from([0x3a, 0x00]);
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      msg.copy(frame, 5);
      req.end(frame);
    });
  } finally {
    session.close();
  }
}

function httpsGet(url: string, opts: https.RequestOptions): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    https.get(url, opts, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0 }));
    }).on("error", reject);
  });
}

function alpn(url: string, ca: Buffer, protocols: string[]): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: u.hostname, port: Number(u.port), ca, ALPNProtocols: protocols, servername: u.hostname }, () => {
      resolve(String(s.alpnProtocol));
      s.end();
    });
    s.on("error", reject);
  });
}

function fingerprint(url: string, ca: Buffer): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: u.hostname, port: Number(u.port), ca, servername: u.hostname }, () => {
      resolve(s.getPeerCertificate().fingerprint256.replace(/:/g, "").toLowerCase());
      s.end();
    });
    s.on("error", reject);
  });
}
