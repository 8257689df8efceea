/**
 * What one unary gRPC call costs on this machine, with no broker behind it:
 * the same JobService.Enqueue message over loopback, answered at once, via
 *
 *   connect      @connectrpc/connect-node on node:http2 (what the broker and client use)
 *   grpc-js      @grpc/grpc-js with @grpc/proto-loader
 *   http2        bare node:http2 request/response (the floor)
 *
 * Server in a child process, client here; prints calls per second and CPU
 * milliseconds per call on each side. Explains the steady-state and latency
 * figures: see docs/performance.md.
 *
 *   node test/bench/dist/rpc-baseline.js [--seconds 3]
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { EnqueueRequestSchema, JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { fork } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { cpuSeconds } from "./procstats.js";

type Kind = "connect" | "grpc-js" | "http2";
const KINDS: Kind[] = ["connect", "grpc-js", "http2"];
const CONCURRENCY = [1, 32];
const PROTO_ROOT = fileURLToPath(new URL("../../../proto/", import.meta.url));

const job = { queue: "q", type: "noop", payload: new TextEncoder().encode('{"i":1}') };

/** Child: serve one kind, send the port to the parent. */
function serve(kind: Kind): void {
  const ready = (port: number) => process.send!(port);
  if (kind === "connect") {
    const handler = connectNodeAdapter({
      routes: (r) => r.service(JobService, { enqueue: (req) => ({ results: req.jobs.map((_, i) => ({ jobId: String(i), duplicate: false })) }) }),
    });
    const srv = http2.createServer(handler).listen(0, "127.0.0.1", () => ready((srv.address() as AddressInfo).port));
  } else if (kind === "grpc-js") {
    const s = new grpc.Server();
    s.addService(grpcService().service, {
      enqueue: (call: { request: { jobs: unknown[] } }, cb: (e: null, r: unknown) => void) =>
        cb(null, { results: call.request.jobs.map((_, i) => ({ jobId: String(i), duplicate: false })) }),
    });
    s.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (_e, port) => ready(port));
  } else {
    const srv = http2
      .createServer((req, res) => {
        req.resume();
        req.on("end", () => {
          res.writeHead(200, { "content-type": "application/grpc" });
          res.end(Buffer.alloc(16));
        });
      })
      .listen(0, "127.0.0.1", () => ready((srv.address() as AddressInfo).port));
  }
}

// proto-loader's output is untyped.
function grpcService(): any {
  const def = protoLoader.loadSync("jobwire/v1/job_service.proto", { includeDirs: [PROTO_ROOT] });
  return (grpc.loadPackageDefinition(def) as any).jobwire.v1.JobService;
}

function caller(kind: Kind, port: number): { call: () => Promise<void>; close: () => void } {
  if (kind === "connect") {
    const client = createClient(JobService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    return { call: async () => void (await client.enqueue({ jobs: [job] })), close: () => {} };
  }
  if (kind === "grpc-js") {
    const Svc = grpcService();
    const c = new Svc(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    return {
      call: () => new Promise((res, rej) => c.enqueue({ jobs: [job] }, (e: Error | null) => (e ? rej(e) : res()))),
      close: () => c.close(),
    };
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const body = toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { jobs: [job] }));
  return {
    call: () =>
      new Promise((res, rej) => {
        const r = session.request({ ":method": "POST", ":path": "/jobwire.v1.JobService/Enqueue", "content-type": "application/grpc" });
        r.on("data", () => {});
        r.on("end", () => res());
        r.on("error", rej);
        r.end(body);
      }),
    close: () => session.close(),
  };
}

async function measure(kind: Kind, seconds: number): Promise<void> {
  const child = fork(fileURLToPath(import.meta.url), ["--serve", kind], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const port = await new Promise<number>((r) => child.once("message", (p) => r(p as number)));
  const { call, close } = caller(kind, port);
  for (let i = 0; i < 200; i++) await call(); // warm up both sides
  for (const conc of CONCURRENCY) {
    let n = 0;
    const c0 = process.cpuUsage();
    const s0 = cpuSeconds(child.pid!);
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: conc }, async () => {
        while (performance.now() - t0 < seconds * 1000) {
          await call();
          n++;
        }
      }),
    );
    const el = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    const clientMs = (c.user + c.system) / 1000 / n;
    const serverMs = ((cpuSeconds(child.pid!) - s0) * 1000) / n;
    process.stdout.write(
      `${kind.padEnd(8)} ${String(conc).padStart(3)} in flight: ${String(Math.round(n / el)).padStart(6)} calls/s; CPU per call: server ${serverMs.toFixed(3)} ms, client ${clientMs.toFixed(3)} ms\n`,
    );
  }
  close();
  child.kill();
}

const argv = process.argv.slice(2);
if (argv[0] === "--serve") serve(argv[1] as Kind);
else {
  const si = argv.indexOf("--seconds");
  const seconds = si >= 0 ? Number(argv[si + 1]) : 3;
  for (const k of KINDS) await measure(k, seconds);
}
