import type { WorkerStream } from "../../model.js";
import { query, type Queryable } from "../db.js";

/** The broker replicas and their Lease streams (jobwire.brokers: migrations/008_operators.sql). */

const UPSERT = `
INSERT INTO jobwire.brokers (id, started_at, seen_at, streams) VALUES ($1, $2, now(), $3)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), streams = EXCLUDED.streams`;

/** Replicas not seen for $1 ms are gone. */
const PRUNE = "DELETE FROM jobwire.brokers WHERE seen_at < now() - $1 * interval '1 millisecond'";

const LIST = "SELECT id, streams FROM jobwire.brokers WHERE seen_at >= now() - $1 * interval '1 millisecond'";

const LEAVE = "DELETE FROM jobwire.brokers WHERE id = $1";

interface StreamJson {
  worker_id: string;
  queues: string[];
  max_in_flight: number;
  credit: number;
  held: number;
  connected_at: string;
  peer: string;
}

function toJson(s: WorkerStream): StreamJson {
  return {
    worker_id: s.workerId,
    queues: s.queues,
    max_in_flight: s.maxInFlight,
    credit: s.credit,
    held: s.held,
    connected_at: s.connectedAt.toISOString(),
    peer: s.peer,
  };
}

export async function heartbeatBroker(db: Queryable, id: string, startedAt: Date, streams: WorkerStream[]): Promise<void> {
  await query(db, UPSERT, [id, startedAt, JSON.stringify(streams.map(toJson))], "jobwire_broker_seen");
}

export async function pruneBrokers(db: Queryable, staleMs: number): Promise<number> {
  const { rowCount } = await query(db, PRUNE, [staleMs], "jobwire_prune_brokers");
  return rowCount ?? 0;
}

export async function leaveBrokers(db: Queryable, id: string): Promise<void> {
  await query(db, LEAVE, [id], "jobwire_broker_leave");
}

/** Every replica's streams, as last reported within `freshMs`. */
export async function listBrokerStreams(db: Queryable, freshMs: number): Promise<WorkerStream[]> {
  const { rows } = await query<{ id: string; streams: StreamJson[] }>(db, LIST, [freshMs], "jobwire_list_brokers");
  return rows.flatMap((r) =>
    r.streams.map((s) => ({
      brokerId: r.id,
      workerId: s.worker_id,
      queues: s.queues,
      maxInFlight: s.max_in_flight,
      credit: s.credit,
      held: s.held,
      connectedAt: new Date(s.connected_at),
      peer: s.peer,
    })),
  );
}
