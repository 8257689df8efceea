/**
 * How each system enqueues, through its own public client API: jobwire's
 * JobwireClient (gRPC), graphile-worker's WorkerUtils (addJob / addJobs),
 * pg-boss's send / insert, BullMQ's Queue (add / addBulk). Used by the producer processes and, for the
 * untimed pre-enqueue of burn-downs, by the bench process itself.
 *
 * Every job is a no-op of type "noop" whose payload is {"i": index}.
 * "queue" is a jobwire queue, a graphile-worker task identifier (graphile's
 * own queue_name would serialise the jobs), a pg-boss queue and a BullMQ
 * queue (whose jobs are named "noop").
 */
import type { SystemName } from "./options.js";
import type { Payload } from "./protocol.js";

export const JOB_TYPE = "noop";

/** What each system's single-job enqueue call is called, for the latency rows. */
export const ENQUEUE_CALL: Record<SystemName, string> = {
  jobwire: "Enqueue",
  "graphile-worker": "addJob",
  "pg-boss": "send",
  bullmq: "add()",
};

export interface Sender {
  /** One job, one call. */
  one(i: number): Promise<void>;
  /** Jobs first .. first + n - 1 in one call. */
  many(first: number, n: number): Promise<void>;
  close(): Promise<void>;
}

const payloads = (first: number, n: number): Payload[] => Array.from({ length: n }, (_, k) => ({ i: first + k }));

export async function openSender(system: SystemName, endpoint: string, queue: string): Promise<Sender> {
  switch (system) {
    case "jobwire": {
      const { JobwireClient } = await import("@jobwire/client");
      // Deadline well past any enqueue the bench makes; UNAVAILABLE is not
      // retried, so a broken broker fails the scenario instead of hiding.
      const client = new JobwireClient({ address: endpoint, timeoutMs: 60_000, retry: { maxAttempts: 1 } });
      return {
        one: async (i) => {
          await client.enqueue(JOB_TYPE, { i } satisfies Payload, { queue });
        },
        many: async (first, n) => {
          await client.enqueueMany(payloads(first, n).map((payload) => ({ type: JOB_TYPE, payload, queue })));
        },
        close: async () => client.close(),
      };
    }
    case "graphile-worker": {
      const { makeWorkerUtils } = await import("graphile-worker");
      const { quietGraphileLogger } = await import("./peers.js");
      const utils = await makeWorkerUtils({ connectionString: endpoint, logger: quietGraphileLogger([]) });
      return {
        one: async (i) => {
          await utils.addJob(queue, { i } satisfies Payload);
        },
        many: async (first, n) => {
          await utils.addJobs(payloads(first, n).map((payload) => ({ identifier: queue, payload })));
        },
        close: async () => {
          await utils.release();
        },
      };
    }
    case "pg-boss": {
      const { startBoss } = await import("./peers.js");
      const boss = await startBoss(endpoint, { role: "producer" });
      return {
        one: async (i) => {
          const id = await boss.send(queue, { i } satisfies Payload);
          if (id === null) throw new Error("pg-boss send returned no id");
        },
        many: async (first, n) => {
          await boss.insert(payloads(first, n).map((data) => ({ name: queue, data })));
        },
        close: () => boss.stop({ graceful: false, close: true, wait: true }),
      };
    }
    case "bullmq": {
      const { Queue } = await import("bullmq");
      const { parseRedisUrl } = await import("./redis.js");
      const q = new Queue<Payload>(queue, { connection: parseRedisUrl(endpoint) });
      await q.waitUntilReady();
      return {
        one: async (i) => {
          await q.add(JOB_TYPE, { i });
        },
        many: async (first, n) => {
          await q.addBulk(payloads(first, n).map((data) => ({ name: JOB_TYPE, data })));
        },
        close: () => q.close(),
      };
    }
  }
}
