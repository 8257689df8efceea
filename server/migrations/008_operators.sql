-- What operators see (issue 13): counts every path contributes to, and the
-- broker replicas with their Lease streams.

-- Jobs enqueued, completed and failed per queue, whoever did it: gRPC, cron,
-- and the SQL enqueue() inside applications' own transactions, which no
-- broker sees. Statements append deltas (insert only: no row two writers
-- fight over, so no enqueue waits on another's commit); the counter loop
-- (maintenance/counters.ts) folds them into counter_totals. A reader sums
-- both, and a fold is one transaction, so it never counts a delta twice or
-- not at all.
CREATE TABLE jobwire.counter_deltas (
  id     bigserial PRIMARY KEY,
  queue  text NOT NULL,
  kind   text NOT NULL CHECK (kind IN ('enqueued', 'completed', 'failed')),
  n      bigint NOT NULL
);

CREATE TABLE jobwire.counter_totals (
  queue  text NOT NULL,
  kind   text NOT NULL,
  total  bigint NOT NULL,
  PRIMARY KEY (queue, kind)
);

-- The broker replicas, each refreshed every few seconds by its own
-- presence loop (maintenance/presence.ts) with its open Lease streams;
-- ListWorkers and the workers-per-queue gauge read it. A row not refreshed
-- for a minute is a replica that is gone, and is deleted.
CREATE TABLE jobwire.brokers (
  id          text PRIMARY KEY,
  started_at  timestamptz NOT NULL,
  seen_at     timestamptz NOT NULL,
  streams     jsonb NOT NULL DEFAULT '[]'
);
