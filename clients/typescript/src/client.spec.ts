import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport, createRouterTransport } from "@connectrpc/connect";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { describe, expect, it } from "vitest";
import { setQueueConfigRequest, toQueueConfig } from "./admin.js";
import { JobwireClient } from "./client.js";
import { JobwireError, PermissionDeniedError, UnavailableError, asUnavailable, toJobwireError } from "./errors.js";
import { Brokers, parseAddresses } from "./failover.js";
import { silentLogger } from "./logger.js";
import { buildJobSpec } from "./model.js";
import type { LeaseBatches, OwnedTransport } from "./transport.js";

describe("errors name their code", () => {
  it("starts the message with the code, as the Go client does, and keeps code, codeName and rawMessage", () => {
    const e = toJobwireError(new ConnectError("token ci lacks scope admin (needed by AdminService.PauseQueue)", Code.PermissionDenied));
    expect(e).toBeInstanceOf(PermissionDeniedError);
    expect(e).toBeInstanceOf(JobwireError);
    expect(e.message).toBe("permission_denied: token ci lacks scope admin (needed by AdminService.PauseQueue)");
    expect(e.code).toBe(Code.PermissionDenied);
    expect(e.codeName).toBe("PERMISSION_DENIED");
    expect(e.rawMessage).toBe("token ci lacks scope admin (needed by AdminService.PauseQueue)");
    expect(toJobwireError(new ConnectError("", Code.Unauthenticated)).message).toBe("unauthenticated");
    expect(toJobwireError(new ConnectError("stop", Code.Canceled)).message).toBe("canceled: stop");
  });

  it("maps a connection that broke mid-call to UNAVAILABLE, and leaves the broker's own answers alone", () => {
    // What connect-node reports when a connection is reset or a TLS handshake fails.
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    const broken = asUnavailable(new ConnectError("[internal] read ECONNRESET", Code.Internal, undefined, undefined, reset));
    expect(broken.code).toBe(Code.Unavailable);
    expect(broken.rawMessage).toContain("broke mid-call");
    // The caller's own cancellation stays CANCELED.
    const aborted = AbortSignal.abort();
    expect(asUnavailable(new ConnectError("stopped", Code.Canceled), aborted).code).toBe(Code.Canceled);
    expect(asUnavailable(new ConnectError("job 7 not found", Code.NotFound)).code).toBe(Code.NotFound);
    expect(asUnavailable(new ConnectError("boom", Code.Unknown)).code).toBe(Code.Unknown);
  });
});

describe("setQueueConfig requests", () => {
  it("send only the settings given, without a mask, when nothing is cleared", () => {
    const req = setQueueConfigRequest("q", { maxRunning: 5, rateLimit: { count: 10, periodMs: 1000 } });
    expect(req.updateMask).toBeUndefined();
    expect(req.maxRunning).toBe(5);
    expect(req.maxAttempts).toBeUndefined();
    expect(req.rateLimit).toMatchObject({ count: 10, period: { seconds: 1n, nanos: 0 } });
  });

  it("name every setting given in update_mask when one is cleared with null", () => {
    const req = setQueueConfigRequest("q", { maxRunning: null, maxAttempts: 3, leaseDurationMs: undefined });
    expect(req.updateMask?.paths).toEqual(["max_running", "max_attempts"]);
    expect(req.maxRunning).toBeUndefined();
    expect(req.maxAttempts).toBe(3);
  });

  it("refuse a name that is not a setting", () => {
    expect(() => setQueueConfigRequest("q", { maxRuning: 5 } as never)).toThrow(/not a queue setting/);
  });

  it("read back the whole config with unset settings absent", () => {
    expect(toQueueConfig(undefined, "q")).toEqual({ queue: "q", paused: false });
  });
});

describe("JobSpec", () => {
  it("carries the concurrency and ordering keys", () => {
    const spec = buildJobSpec({ queue: "q", type: "t", concurrencyKey: "tenant:42", orderingKey: "account:7" });
    expect(spec.concurrencyKey).toBe("tenant:42");
    expect(spec.orderingKey).toBe("account:7");
    expect(buildJobSpec({ queue: "q", type: "t" }).concurrencyKey).toBe("");
  });
});

describe("broker addresses", () => {
  it("are split on commas or taken as an array, and normalized", () => {
    expect(parseAddresses("a:1, http://b:2/,", false)).toEqual(["http://a:1", "http://b:2"]);
    expect(parseAddresses(["a:1", "https://b:2"], false)).toEqual(["http://a:1", "https://b:2"]);
    expect(parseAddresses("a:1", true)).toEqual(["https://a:1"]);
    expect(parseAddresses(undefined, false)).toEqual(["http://127.0.0.1:50051"]);
    expect(() => parseAddresses("http://a:1", true)).toThrow(/use https/);
    expect(() => parseAddresses("ftp://a:1", false)).toThrow(/must look like/);
  });
});

/** An endpoint whose transport is an in-memory JobService, and whose Lease stream is `lease`. */
function endpoint(transport: Transport, lease?: LeaseBatches): OwnedTransport {
  return {
    transport,
    leaseBatches: lease ?? (() => (async function* () {})()),
    close: () => {},
  };
}

describe("failover", () => {
  it("moves a unary call to the next broker when the current one breaks mid-response, and stays there", async () => {
    const calls: string[] = [];
    const dying = createRouterTransport(({ service }) =>
      service(JobService, {
        getJob: () => {
          calls.push("a");
          throw new ConnectError("the stream ended before the call's status arrived", Code.Unavailable);
        },
      }),
    );
    const alive = createRouterTransport(({ service }) =>
      service(JobService, {
        getJob: (req) => {
          calls.push("b");
          return { job: { id: req.id, queue: "q", type: "t" } };
        },
      }),
    );
    const byUrl: Record<string, OwnedTransport> = { "http://a:1": endpoint(dying), "http://b:2": endpoint(alive) };
    const brokers = new Brokers(["http://a:1", "http://b:2"], (u) => byUrl[u]!, silentLogger);
    const client = new JobwireClient({ transport: brokers.transport() });
    expect((await client.getJob("7")).id).toBe("7");
    expect((await client.getJob("8")).id).toBe("8");
    expect(calls).toEqual(["a", "b", "b"]);
    expect(brokers.current().url).toBe("http://b:2");
  });

  it("gives the caller UNAVAILABLE, not UNKNOWN, when every broker broke mid-response", async () => {
    const dying = createRouterTransport(({ service }) =>
      service(AdminService, {
        getQueueStats: () => {
          throw new ConnectError("the stream ended before the call's status arrived", Code.Unavailable);
        },
      }),
    );
    const brokers = new Brokers(["http://a:1"], () => endpoint(dying), silentLogger);
    const client = new JobwireClient({ transport: brokers.transport(), retry: { maxAttempts: 2, initialMs: 1, maxMs: 1 } });
    const err = await client.getQueueStats().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(/^unavailable: the stream ended before the call.s status arrived/);
  });

  it("moves the Lease stream to the next broker when it fails or the broker ends it, not when the worker half-closes", async () => {
    const empty = createRouterTransport(() => {});
    const broken: LeaseBatches = () =>
      (async function* (): AsyncGenerator<Uint8Array[]> {
        throw new ConnectError("the connection closed before the call's status arrived", Code.Unavailable);
      })();
    const ends: LeaseBatches = () => (async function* (): AsyncGenerator<Uint8Array[]> {})();
    const drainsRequests: LeaseBatches = (requests) =>
      (async function* (): AsyncGenerator<Uint8Array[]> {
        for await (const _ of requests);
      })();
    const urls = ["http://a:1", "http://b:2", "http://c:3"];
    const leases = [broken, ends, drainsRequests];
    const brokers = new Brokers(urls, (u) => endpoint(empty, leases[urls.indexOf(u)]), silentLogger);
    const open = () =>
      (async function* () {
        yield create(LeaseRequestSchema, {});
      })();
    const err = await (async () => {
      for await (const _ of brokers.leaseBatches()(open(), {}));
    })().catch((e: unknown) => e);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(brokers.current().url).toBe("http://b:2");
    for await (const _ of brokers.leaseBatches()(open(), {}));
    expect(brokers.current().url).toBe("http://c:3");
    // The requests end (a half-close): the stream's end is the worker's doing.
    for await (const _ of brokers.leaseBatches()(open(), {}));
    expect(brokers.current().url).toBe("http://c:3");
  });
});
