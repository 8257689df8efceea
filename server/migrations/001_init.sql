-- History: the functions this migration created are redefined by
-- server/sql/functions/*.sql, applied after every migration. Read those for
-- what runs now; this file only says how the schema got here.
--
-- jobwire schema, version 1. Applied by the broker at start-up under an
-- advisory lock, recorded in jobwire.migrations.

CREATE TYPE jobwire.job_state AS ENUM (
  'scheduled', 'available', 'running', 'retryable', 'completed', 'dead', 'cancelled'
);

-- Per-queue defaults, set with AdminService.SetQueueConfig. A queue with no
-- row uses the broker defaults.
CREATE TABLE jobwire.queues (
  name          text PRIMARY KEY,
  max_attempts  int CHECK (max_attempts >= 1),
  lease_ms      int CHECK (lease_ms > 0),
  -- {"initial_ms", "max_ms", "multiplier", "jitter"}, each optional.
  retry         jsonb,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE jobwire.job_id_seq AS bigint;

-- One row per job, for its whole life: completed and dead jobs stay as
-- history until pruned. fillfactor leaves room on each page so that updates
-- that touch no indexed column (heartbeats) can be HOT.
CREATE TABLE jobwire.jobs (
  id                      bigint PRIMARY KEY DEFAULT nextval('jobwire.job_id_seq'),
  state                   jobwire.job_state NOT NULL,
  priority                int NOT NULL DEFAULT 0,
  attempt                 int NOT NULL DEFAULT 0,
  max_attempts            int NOT NULL CHECK (max_attempts >= 1),
  run_at                  timestamptz NOT NULL DEFAULT now(),
  created_at              timestamptz NOT NULL DEFAULT now(),
  finished_at             timestamptz,
  lease_token             uuid,
  lease_expires_at        timestamptz,
  -- The lease length asked for by the job itself (null: worker, queue, default).
  lease_ms                int,
  -- The lease length the current lease was granted with; heartbeats extend by it.
  leased_for_ms           int,
  cancel_requested        boolean NOT NULL DEFAULT false,
  idempotency_released    boolean NOT NULL DEFAULT false,
  idempotency_expires_at  timestamptz,
  queue                   text NOT NULL,
  type                    text NOT NULL,
  content_type            text NOT NULL DEFAULT 'application/json',
  worker_id               text,
  idempotency_key         text,
  retry                   jsonb,
  headers                 jsonb NOT NULL DEFAULT '{}',
  errors                  jsonb NOT NULL DEFAULT '[]',
  payload                 bytea NOT NULL
) WITH (fillfactor = 85);

ALTER SEQUENCE jobwire.job_id_seq OWNED BY jobwire.jobs.id;

-- The claim index. Partial, so it holds only due work: its size tracks the
-- backlog, never the history, and the claim query reads it in exactly the
-- order it delivers (priority, then run_at, then id).
CREATE INDEX jobs_claim_idx ON jobwire.jobs (queue, priority DESC, run_at, id)
  WHERE state = 'available';

-- The scheduler promotes due scheduled and retryable jobs to available.
CREATE INDEX jobs_due_idx ON jobwire.jobs (run_at)
  WHERE state IN ('scheduled', 'retryable');

-- The reaper scans running jobs for expired leases. Indexing id rather than
-- lease_expires_at keeps heartbeats HOT; the running set is bounded by the
-- workers' credit, so the scan stays small.
CREATE INDEX jobs_running_idx ON jobwire.jobs (id)
  WHERE state = 'running';

-- Replay by filter, and the dead-letter view.
CREATE INDEX jobs_finished_idx ON jobwire.jobs (queue, finished_at)
  WHERE state IN ('dead', 'cancelled');

-- Idempotency: one live key per queue, enforced by the index, not by
-- check-then-insert. A key past its TTL is released (flag set) before a new
-- job takes it.
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobwire.jobs (queue, idempotency_key)
  WHERE idempotency_key IS NOT NULL AND NOT idempotency_released;

-- The wait before the next attempt:
--   delay = min(max, initial * multiplier^(attempt-1)) * (1 - jitter * random())
-- Each field comes from the job's policy, else the queue's, else the default
-- (the defaults documented in README.md, "Retries and dead letters").
CREATE FUNCTION jobwire.retry_delay(attempt int, job_policy jsonb, queue_policy jsonb)
RETURNS interval LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT make_interval(secs => least(p.max_ms, p.initial_ms * power(p.multiplier, least(greatest(attempt - 1, 0), 200)))
                               * (1 - p.jitter * random()) / 1000.0)
  FROM (SELECT
          coalesce((job_policy->>'initial_ms')::float8, (queue_policy->>'initial_ms')::float8, 1000)    AS initial_ms,
          coalesce((job_policy->>'max_ms')::float8,     (queue_policy->>'max_ms')::float8,     3600000) AS max_ms,
          coalesce((job_policy->>'multiplier')::float8, (queue_policy->>'multiplier')::float8, 2)       AS multiplier,
          coalesce((job_policy->>'jitter')::float8,     (queue_policy->>'jitter')::float8,     0.2)     AS jitter
       ) p
$$;

-- Wakes idle brokers when jobs become available. One statement-level
-- trigger, so a 1000-row insert sends one NOTIFY per queue, and Postgres
-- folds identical notifications within a transaction into one, delivered at
-- commit: a job enqueued inside a transaction wakes nobody until it commits.
CREATE FUNCTION jobwire.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('jobwire', CASE WHEN n.state = 'available' THEN 'a:' || n.queue ELSE 's:' END)
  FROM (SELECT DISTINCT queue, state FROM new_jobs) n;
  RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobwire.jobs
  REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION jobwire.notify_inserted();

-- Transactional enqueue, for applications that share the database:
--
--   BEGIN;
--   INSERT INTO accounts (email) VALUES ('ada@example.com') RETURNING id;   -- say 42
--   SELECT jobwire.enqueue('emails', 'send_welcome_email', '{"user_id": 42}');
--   COMMIT;
--
-- The job exists, and wakes workers, only if the transaction commits.
-- Returns the job id, or the live job's id when idempotency_key is taken.
CREATE FUNCTION jobwire.enqueue(
  queue text,
  type text,
  payload jsonb DEFAULT '{}',
  run_at timestamptz DEFAULT NULL,
  priority int DEFAULT 0,
  max_attempts int DEFAULT NULL,
  idempotency_key text DEFAULT NULL,
  idempotency_ttl interval DEFAULT interval '24 hours',
  headers jsonb DEFAULT '{}',
  lease_duration interval DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  new_id bigint;
  due timestamptz := coalesce(enqueue.run_at, now());
BEGIN
  IF queue IS NULL OR queue !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' THEN
    RAISE EXCEPTION 'jobwire.enqueue: invalid queue name %', quote_nullable(queue) USING ERRCODE = '22023';
  END IF;
  IF type IS NULL OR length(type) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'jobwire.enqueue: type must be 1 to 255 characters' USING ERRCODE = '22023';
  END IF;
  IF max_attempts IS NOT NULL AND max_attempts < 1 THEN
    RAISE EXCEPTION 'jobwire.enqueue: max_attempts must be at least 1' USING ERRCODE = '22023';
  END IF;
  IF enqueue.idempotency_key IS NOT NULL THEN
    UPDATE jobwire.jobs j SET idempotency_released = true
     WHERE j.queue = enqueue.queue AND j.idempotency_key = enqueue.idempotency_key
       AND NOT j.idempotency_released AND j.idempotency_expires_at <= now();
  END IF;
  INSERT INTO jobwire.jobs (queue, type, payload, state, run_at, priority, max_attempts, lease_ms,
                            idempotency_key, idempotency_expires_at, headers)
  VALUES (enqueue.queue, enqueue.type, convert_to(enqueue.payload::text, 'UTF8'),
          CASE WHEN due > now() THEN 'scheduled' ELSE 'available' END::jobwire.job_state,
          due, enqueue.priority,
          coalesce(enqueue.max_attempts, (SELECT q.max_attempts FROM jobwire.queues q WHERE q.name = enqueue.queue), 25),
          (extract(epoch FROM enqueue.lease_duration) * 1000)::int,
          enqueue.idempotency_key,
          CASE WHEN enqueue.idempotency_key IS NOT NULL THEN now() + enqueue.idempotency_ttl END,
          coalesce(enqueue.headers, '{}'))
  ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL AND NOT idempotency_released
  DO NOTHING
  RETURNING id INTO new_id;
  IF new_id IS NULL THEN
    SELECT j.id INTO new_id FROM jobwire.jobs j
     WHERE j.queue = enqueue.queue AND j.idempotency_key = enqueue.idempotency_key AND NOT j.idempotency_released;
  END IF;
  RETURN new_id;
END
$$;
