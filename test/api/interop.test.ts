import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startTestBroker, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, expect, it } from "vitest";
import { uniqueQueue } from "./helpers.js";

/**
 * The broker driven by @grpc/grpc-js with protos loaded at run time: a
 * client stack that shares no code with connect-es.
 */
const PROTO_DIR = new URL("../../proto/", import.meta.url).pathname;

type Callback<T> = (err: grpc.ServiceError | null, res: T) => void;
type Unary = (req: unknown, cb: Callback<any>) => void;
let tb: TestBroker;
let jobs: Record<string, Unary> & grpc.Client;
let workers: Record<string, Unary> & grpc.Client & { lease(): grpc.ClientDuplexStream<unknown, any> };

function call<T>(client: Record<string, Unary>, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => client[method]!.call(client, req, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))));
}

beforeAll(async () => {
  tb = await startTestBroker();
  const def = protoLoader.loadSync(["jobwire/v1/job_service.proto", "jobwire/v1/worker_service.proto"], {
    includeDirs: [PROTO_DIR],
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const target = tb.url.replace("http://", "");
  jobs = new pkg.jobwire.v1.JobService(target, grpc.credentials.createInsecure());
  workers = new pkg.jobwire.v1.WorkerService(target, grpc.credentials.createInsecure());
});

afterAll(async () => {
  jobs?.close();
  workers?.close();
  await tb.stop();
});

it("enqueues, leases over a bidi stream, acks, and reads the job back", async () => {
  const queue = uniqueQueue("interop");
  const res = await call<{ results: { jobId: string; duplicate: boolean }[] }>(jobs, "enqueue", {
    jobs: [{ queue, type: "greet", payload: Buffer.from(JSON.stringify({ name: "ada" })), delay: undefined }],
  });
  const id = res.results[0]!.jobId;

  const stream = workers.lease();
  stream.write({ open: { queues: [queue], workerId: "grpc-js", maxInFlight: 5 } });
  const leased = await new Promise<any>((resolve, reject) => {
    stream.on("data", (msg: any) => msg.jobs.length && resolve(msg.jobs[0]));
    stream.on("error", reject);
  });
  expect(leased.job.id).toBe(id);
  expect(leased.job.state).toBe("JOB_STATE_RUNNING");
  expect(JSON.parse(Buffer.from(leased.job.payload).toString())).toEqual({ name: "ada" });

  const ack = await call<{ lostLeaseTokens: string[] }>(workers, "ack", { leaseTokens: [leased.leaseToken] });
  expect(ack.lostLeaseTokens).toEqual([]);
  stream.end();
  await new Promise((resolve) => stream.on("end", resolve).on("error", resolve).on("status", resolve));

  const got = await call<{ job: { state: string; attempt: number } }>(jobs, "getJob", { id });
  expect(got.job).toMatchObject({ state: "JOB_STATE_COMPLETED", attempt: 1 });
});

it("reports errors with gRPC status codes", async () => {
  const err = await call(jobs, "enqueue", { jobs: [{ queue: "", type: "t" }] }).catch((e: grpc.ServiceError) => e);
  expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
  expect((err as grpc.ServiceError).details).toContain("jobs[0].queue");
  const nf = await call(jobs, "getJob", { id: "123456789" }).catch((e: grpc.ServiceError) => e);
  expect((nf as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
  const stale = await call(workers, "nack", { leaseToken: "1.00000000-0000-0000-0000-000000000000", error: "x" }).catch((e: grpc.ServiceError) => e);
  expect((stale as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
});
