-- The ack, with retention (migrations/005_retention.sql has the schema).
-- Leases come as (id, token) pairs, locked in id order, with JIT off: see
-- heartbeat_leases.sql. default_retention_ms is the broker's
-- JOBWIRE_COMPLETED_RETENTION_MS; a queue's own setting wins.
--
-- The rows are locked first, in id order ("ORDER BY id FOR UPDATE", as in
-- heartbeat_leases.sql), then deleted (retention zero) or updated by id. Not
-- by row address, as the claim does: a lock that waited for a heartbeat
-- holds the heartbeat's new row version, which this statement's snapshot
-- cannot see through a TID scan, while a lookup by id finds the old version
-- and follows it to the new one.
-- A job whose idempotency key is live keeps its row until the key expires.
--
-- A completion can let a held-back job start: a slot under max_running or
-- max_running_per_key, a rate limit's turn, the next job of an ordering key.
-- For those queues (gated: claim_gated.sql) it sends the NOTIFY that wakes
-- a stream, at commit. Other queues pay only the look at their settings.
--
-- It counts completions per queue (counter_deltas: migrations/008_operators.sql).
--
-- It returns the leases it could NOT complete (lost_id), and one row per
-- queue with how many it completed there (queue, acked): almost always one
-- or two rows, where a row per acked job cost the broker a parsed row, an
-- object and a lookup per job.
CREATE OR REPLACE FUNCTION jobwire.ack_leases(ids bigint[], pairs jsonb, default_retention_ms bigint)
RETURNS TABLE (lost_id bigint, queue text, acked int) LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
  retention jsonb;
  gated text[];
  done_ids bigint[];
  done_queues text[];
  wake text[];
BEGIN
  SELECT coalesce(jsonb_object_agg(q.name, q.completed_retention_ms) FILTER (WHERE q.completed_retention_ms IS NOT NULL), '{}'),
         coalesce(array_agg(q.name) FILTER (WHERE q.max_running IS NOT NULL OR q.max_running_per_key IS NOT NULL
                                            OR q.rate_count IS NOT NULL OR q.key_rate_count IS NOT NULL), '{}')
    INTO retention, gated
  FROM jobwire.queues q;
  WITH acked AS (
    SELECT j.id, j.queue, j.ordering_key IS NOT NULL AS ordered,
           coalesce((retention ->> j.queue)::bigint, default_retention_ms) = 0
             AND (j.idempotency_key IS NULL OR j.idempotency_released OR j.idempotency_expires_at <= now()) AS drop
    FROM jobwire.jobs j
    WHERE j.id = ANY (ids) AND j.lease_token = (pairs ->> j.id::text)::uuid
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
  SELECT array_agg(a.id), array_agg(a.queue), array_agg(DISTINCT a.queue) FILTER (WHERE a.ordered OR a.queue = ANY (gated))
    INTO done_ids, done_queues, wake
  FROM acked a
  WHERE a.id IN (SELECT g.id FROM gone g UNION ALL SELECT k.id FROM kept k);

  IF wake IS NOT NULL THEN
    PERFORM pg_notify('jobwire', 'a:' || w) FROM unnest(wake) w;
  END IF;
  -- Completions per queue, for the counters every replica reports (one row per queue per call).
  IF done_queues IS NOT NULL THEN
    INSERT INTO jobwire.counter_deltas (queue, kind, n) SELECT dq, 'completed', count(*) FROM unnest(done_queues) dq GROUP BY dq;
  END IF;
  RETURN QUERY
    SELECT i, NULL::text, NULL::int FROM (SELECT unnest(ids) EXCEPT ALL SELECT unnest(coalesce(done_ids, '{}'))) l(i)
    UNION ALL
    SELECT NULL::bigint, dq, count(*)::int FROM unnest(done_queues) dq GROUP BY dq;
END
$$;
