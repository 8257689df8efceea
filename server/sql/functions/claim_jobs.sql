-- The claim: up to `lim` jobs from `queues` for one Lease stream, in one
-- call (store/sql/claim.ts). A row is claimed by exactly one statement:
-- FOR UPDATE SKIP LOCKED, and the lock re-checks state = 'available'.
--
-- Each queue takes one of two paths:
--   * the fast path (claim_plain.sql), one statement over jobs_claim_idx
--     for every queue that has no limits and no waiting jobs with keys:
--     what a queue that uses no flow control pays is this function's own
--     look at the queues' settings, two index probes per queue, and the
--     call, next to a claim of the same jobs as before;
--   * the gated path (claim_gated.sql), one queue at a time, for the rest.
-- Paused queues take neither: no replica leases from them once the pause
-- has committed, and jobs already running finish as usual.
CREATE OR REPLACE FUNCTION jobwire.claim_jobs(queues text[], lim int, worker_lease_ms int, default_lease_ms int, worker text)
RETURNS SETOF jobwire.claimed LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
  plain text[];
  gated text[];
  left_ int := lim;
  n int;
  g text;
BEGIN
  SELECT coalesce(array_agg(x.name) FILTER (WHERE NOT x.gated), '{}'), coalesce(array_agg(x.name) FILTER (WHERE x.gated), '{}')
    INTO plain, gated
  FROM (
    SELECT qn.name,
           c.max_running IS NOT NULL OR c.max_running_per_key IS NOT NULL OR c.rate_count IS NOT NULL OR c.key_rate_count IS NOT NULL
           OR EXISTS (SELECT 1 FROM jobwire.jobs j
                      WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL AND j.queue = qn.name)
           OR EXISTS (SELECT 1 FROM jobwire.jobs j
                      WHERE j.ordering_key IS NOT NULL AND j.state IN ('available', 'running', 'retryable') AND j.state = 'available'
                        AND j.queue = qn.name) AS gated
    FROM unnest(queues) qn(name) LEFT JOIN jobwire.queues c ON c.name = qn.name
    WHERE c.paused IS NOT TRUE
  ) x;
  IF cardinality(plain) > 0 THEN
    RETURN QUERY SELECT * FROM jobwire.claim_plain(plain, left_, worker_lease_ms, default_lease_ms, worker);
    GET DIAGNOSTICS n = ROW_COUNT;
    left_ := left_ - n;
  END IF;
  FOREACH g IN ARRAY gated LOOP
    EXIT WHEN left_ <= 0;
    RETURN QUERY SELECT * FROM jobwire.claim_gated(g, left_, worker_lease_ms, default_lease_ms, worker);
    GET DIAGNOSTICS n = ROW_COUNT;
    left_ := left_ - n;
  END LOOP;
END
$$;
