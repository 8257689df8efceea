-- The ack, with retention (migrations/005_retention.sql has the schema).
-- Leases come as (id, token) pairs, locked in id order, with JIT off: see
-- heartbeat_leases.sql. default_retention_ms is the broker's
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
CREATE OR REPLACE FUNCTION jobwire.ack_leases(ids bigint[], pairs jsonb, default_retention_ms bigint)
RETURNS TABLE (lost_id bigint) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
      WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = (pairs ->> j.id::text)::uuid
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
    WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = (pairs ->> j.id::text)::uuid
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
