-- History: the functions this migration created are redefined by
-- server/sql/functions/*.sql, applied after every migration. Read those for
-- what runs now; this file only says how the schema got here.
--
-- Retention of completed jobs.
--
-- A completed job stays as history until its prune_at, then the pruner
-- (maintenance/pruner.ts) deletes it. prune_at is fixed when the job is
-- acked: the queue's completed_retention_ms (else the broker's default)
-- after completion, and never before the job's idempotency key expires, so
-- that pruning cannot let a duplicate in. A retention of zero deletes the
-- job in the ack itself, as graphile-worker does: no new row version and no
-- index entry, where keeping the row writes both. In 50,000-job
-- burn-downs that took Postgres from 1.19-1.24 to 0.88-0.89 times the
-- workers' CPU; per ack, 8-10 us of Postgres per job against 17-20 for the
-- UPDATE (docs/performance.md). Dead and cancelled jobs are never pruned:
-- they wait for an operator.
--
-- History from before this migration gets 24 hours (the default) from its
-- completion, whatever JOBWIRE_COMPLETED_RETENTION_MS says.

ALTER TABLE jobwire.queues ADD COLUMN completed_retention_ms bigint CHECK (completed_retention_ms >= 0);

ALTER TABLE jobwire.jobs ADD COLUMN prune_at timestamptz;

UPDATE jobwire.jobs SET prune_at = greatest(finished_at + interval '24 hours', idempotency_expires_at)
WHERE state = 'completed';

-- The pruner reads completed jobs in the order they fall due. prune_at only
-- grows with time for a given retention, so inserts land at the right edge.
CREATE INDEX jobs_prune_idx ON jobwire.jobs (prune_at) WHERE state = 'completed';

-- The ack, now with retention. default_retention_ms is the broker's
-- JOBWIRE_COMPLETED_RETENTION_MS; a queue's own setting wins.
--
-- When no acked row can be dropped (no queue, nor the default, has a
-- retention of zero) it is the single UPDATE of 003, which locks rows in id
-- order as it goes. Otherwise one call may delete some rows and update
-- others, and two statements would lock the two sets one after the other,
-- out of id order, where a heartbeat over the same rows locks in id order:
-- a deadlock. So the rows are locked first, in id order (FOR UPDATE over the
-- primary key's scan), then deleted or updated by id. Not by row address,
-- as the claim does: a lock that waited for a heartbeat holds the
-- heartbeat's new row version, which this statement's snapshot cannot see
-- through a TID scan, while a scan by id finds the old version and follows
-- it to the new one. A job whose idempotency key is live keeps its row until
-- the key expires.
--
-- It returns the ids it could NOT complete (stale or unknown leases), not
-- the ones it did: almost always none, where a row per acked job cost the
-- broker a parsed row, an object and a lookup per job.
DROP FUNCTION jobwire.ack_leases(bigint[], uuid[]);

CREATE FUNCTION jobwire.ack_leases(ids bigint[], tokens uuid[], default_retention_ms bigint)
RETURNS TABLE (lost_id bigint) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  retention jsonb;
BEGIN
  SELECT coalesce(jsonb_object_agg(q.name, q.completed_retention_ms), '{}') INTO retention
  FROM jobwire.queues q WHERE q.completed_retention_ms IS NOT NULL;

  IF default_retention_ms > 0 AND NOT jsonb_path_exists(retention, '$.* ? (@ == 0)') THEN
    RETURN QUERY
    WITH done AS (
      UPDATE jobwire.jobs j
      SET state = 'completed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
          prune_at = greatest(now() + coalesce((retention ->> j.queue)::bigint, default_retention_ms) * interval '1 millisecond',
                              j.idempotency_expires_at)
      WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = ANY (tokens)
      RETURNING j.id
    )
    SELECT i FROM unnest(ids) i EXCEPT ALL SELECT d.id FROM done d;
    RETURN;
  END IF;

  RETURN QUERY
  WITH acked AS (
    SELECT j.id,
           coalesce((retention ->> j.queue)::bigint, default_retention_ms) = 0
             AND (j.idempotency_key IS NULL OR j.idempotency_released OR j.idempotency_expires_at <= now()) AS drop
    FROM jobwire.jobs j
    WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = ANY (tokens)
    ORDER BY j.id
    FOR UPDATE
  ), gone AS (
    DELETE FROM jobwire.jobs j
    WHERE j.id = ANY (ARRAY(SELECT a.id FROM acked a WHERE a.drop))
    RETURNING j.id
  ), kept AS (
    UPDATE jobwire.jobs j
    SET state = 'completed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
        prune_at = greatest(now() + coalesce((retention ->> j.queue)::bigint, default_retention_ms) * interval '1 millisecond',
                            j.idempotency_expires_at)
    WHERE j.id = ANY (ARRAY(SELECT a.id FROM acked a WHERE NOT a.drop))
    RETURNING j.id
  )
  SELECT i FROM unnest(ids) i EXCEPT ALL (SELECT g.id FROM gone g UNION ALL SELECT k.id FROM kept k);
END
$$;
