-- Gives back leases a stream could not deliver; the attempt is not counted.
-- Pairs and lock order as in heartbeat_leases.sql.
--
-- A job cancelled while its lease was claimed but not yet delivered
-- (CancelJob sets cancel_requested on a running job) ends cancelled, as
-- CancelJob does to a waiting job. Put back as available, its flag was
-- cleared by the next claim and it ran as if never cancelled.
CREATE OR REPLACE FUNCTION jobwire.release_leases(ids bigint[], pairs jsonb)
RETURNS TABLE (id bigint, queue text) LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
  WITH locked AS (
    SELECT j.id FROM jobwire.jobs j
    WHERE j.id = ANY (ids) AND j.lease_token = (pairs ->> j.id::text)::uuid
    ORDER BY j.id
    FOR UPDATE
  )
  UPDATE jobwire.jobs j
  SET state = CASE WHEN j.cancel_requested THEN 'cancelled'::jobwire.job_state ELSE 'available' END,
      finished_at = CASE WHEN j.cancel_requested THEN now() END,
      attempt = j.attempt - 1, lease_token = NULL, lease_expires_at = NULL,
      leased_for_ms = NULL, worker_id = NULL
  FROM locked l
  WHERE j.id = l.id
  RETURNING j.id, j.queue
$$;
