-- Hardening (issue 14): a bounded error history, exact lease pairing, and
-- broker defaults the SQL enqueue() can read.

-- Failed attempts left out of jobs.errors to keep it bounded: the first 3
-- and the last 20 entries are kept, within 128 KiB (sql/functions/push_error.sql).
-- Unbounded, a job with a 1 MiB payload and 49 nacks of 64 KiB no longer
-- fit in a 4 MiB lease frame: every delivery reset the worker's stream and
-- burnt an attempt, and GetJob and ListJobs failed with RESOURCE_EXHAUSTED.
ALTER TABLE jobwire.jobs ADD COLUMN errors_dropped int NOT NULL DEFAULT 0;

UPDATE jobwire.jobs j
SET errors = (SELECT jsonb_agg(e ORDER BY i) FROM jsonb_array_elements(j.errors) WITH ORDINALITY a(e, i)
              WHERE i <= 3 OR i > jsonb_array_length(j.errors) - 20),
    errors_dropped = jsonb_array_length(j.errors) - 23
WHERE jsonb_array_length(j.errors) > 23;

-- Broker settings the database-side code needs: the SQL enqueue() reads
-- default_max_attempts (JOBWIRE_DEFAULT_MAX_ATTEMPTS), which the broker
-- writes at start-up. Until a broker has started, the documented default (25) applies.
CREATE TABLE jobwire.settings (
  name        text PRIMARY KEY,
  value       jsonb NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The leased-row functions now take (id, token) pairs as one jsonb object
-- ({"<id>": "<uuid>"}), so that a token matches only its own job's lease:
-- with a list of ids and a list of tokens, Ack(["A.<uuid of B>",
-- "B.<uuid of A>"]) completed both jobs. The new versions are in
-- sql/functions; the old signatures go.
DROP FUNCTION jobwire.ack_leases(bigint[], uuid[], bigint);
DROP FUNCTION jobwire.heartbeat_leases(bigint[], uuid[], int);
DROP FUNCTION jobwire.release_leases(bigint[], uuid[]);
