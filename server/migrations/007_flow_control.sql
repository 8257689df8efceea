-- Flow control (issue 11): pause, global and per-key concurrency, rate
-- limits, ordering keys, and fairness between keys. The claim that enforces
-- them is sql/functions/claim_jobs.sql.

-- concurrency_key: jobs that count together against max_running_per_key and
-- rate_limit_per_key, and the unit the claim takes in turn.
-- ordering_key: jobs that run one at a time, in enqueue order.
-- queued_at: a job's place in line, fixed when it is enqueued (its due time
-- then) and kept through retries, so that a retried or reclaimed job comes
-- back at its old place instead of behind the whole backlog (a reclaimed job
-- once waited a p50 of 28.6 s behind a backlog ordered by run_at), and so
-- that the jobs of an ordering key keep their order. Replay puts a job at
-- the back (now()). Null only for jobs that ended before this migration.
ALTER TABLE jobwire.jobs
  ADD COLUMN concurrency_key text,
  ADD COLUMN ordering_key text,
  ADD COLUMN queued_at timestamptz;

UPDATE jobwire.jobs SET queued_at = run_at WHERE state IN ('scheduled', 'available', 'running', 'retryable');

-- Queue settings (AdminService.SetQueueConfig, PauseQueue, ResumeQueue).
ALTER TABLE jobwire.queues
  ADD COLUMN paused boolean NOT NULL DEFAULT false,
  ADD COLUMN max_running int CHECK (max_running >= 1),
  ADD COLUMN max_running_per_key int CHECK (max_running_per_key >= 1),
  ADD COLUMN rate_count int CHECK (rate_count >= 1),
  ADD COLUMN rate_period_ms bigint CHECK (rate_period_ms >= 1),
  ADD COLUMN key_rate_count int CHECK (key_rate_count >= 1),
  ADD COLUMN key_rate_period_ms bigint CHECK (key_rate_period_ms >= 1),
  ADD CONSTRAINT rate_whole CHECK ((rate_count IS NULL) = (rate_period_ms IS NULL)),
  ADD CONSTRAINT key_rate_whole CHECK ((key_rate_count IS NULL) = (key_rate_period_ms IS NULL));

-- The claim's moving parts for gated queues, changed only under the
-- queue's claim lock: where the round-robin over keys goes on from, and
-- the rate limiters' state (GCRA: tat is the theoretical arrival time of
-- the next start; key '' is the queue's own limit).
CREATE TABLE jobwire.queue_cursors (
  queue        text PRIMARY KEY,
  key_cursor   text,
  order_cursor text
);

CREATE TABLE jobwire.rate_buckets (
  queue  text NOT NULL,
  key    text NOT NULL,
  tat    timestamptz NOT NULL,
  PRIMARY KEY (queue, key)
);

-- The claim indexes. Each holds only due work, in the order it is taken.
-- Plain jobs (no key): the fast path, unchanged but for the order column.
DROP INDEX jobwire.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobwire.jobs (queue, priority DESC, queued_at, id)
  WHERE state = 'available' AND concurrency_key IS NULL AND ordering_key IS NULL;
-- Jobs with a concurrency key: one range per key, found key by key.
CREATE INDEX jobs_claim_key_idx ON jobwire.jobs (queue, concurrency_key, priority DESC, queued_at, id)
  WHERE state = 'available' AND concurrency_key IS NOT NULL AND ordering_key IS NULL;
-- Jobs with an ordering key, waiting or holding it: the first row of a key
-- is its head, and only an available head may run.
CREATE INDEX jobs_ordering_idx ON jobwire.jobs (queue, ordering_key, queued_at, id)
  WHERE ordering_key IS NOT NULL AND state IN ('available', 'running', 'retryable');

-- Running jobs by queue and key: the counts max_running and
-- max_running_per_key are checked against. The reaper reads it too (it
-- took jobs_running_idx on id before; it skips locked rows, so it needs no
-- lock order). queue and concurrency_key never change on a heartbeat, so
-- heartbeats stay HOT.
DROP INDEX jobwire.jobs_running_idx;
CREATE INDEX jobs_running_idx ON jobwire.jobs (queue, concurrency_key) WHERE state = 'running';

-- The claim's signature changes (it returns the keys, and a row for a
-- rate limit's next start); the SQL enqueue() gains the two keys.
DROP FUNCTION jobwire.claim_jobs(text[], int, int, int, text);
DROP FUNCTION jobwire.enqueue(text, text, jsonb, timestamptz, int, int, text, interval, jsonb, interval);

-- What a claim returns per job: what it did not set itself (the broker
-- fills in the rest), the error history only when there is one. A row with
-- a null id is not a job: it says when a rate limit lets the next job of
-- the queue start (in lease_expires_at), so the broker can look again then.
CREATE TYPE jobwire.claimed AS (
  id bigint, queue text, type text, payload bytea, content_type text, priority int, attempt int,
  max_attempts int, run_at timestamptz, created_at timestamptz, headers jsonb, idempotency_key text,
  errors jsonb, errors_dropped int, lease_expires_at timestamptz, lease_ms int, lease_token uuid,
  concurrency_key text, ordering_key text
);
