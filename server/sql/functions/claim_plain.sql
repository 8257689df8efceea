-- The claim's fast path: plain jobs (no concurrency or ordering key) of
-- queues with no limits, which is every queue that uses none of flow
-- control. claim_jobs.sql decides which queues come here.
--
-- A prepared statement is re-planned on every execution for as long as its
-- plans for the actual values look cheaper than one plan for any value (the
-- "generic" plan), which they do for array parameters. At one job per call
-- that planning was half of Postgres's CPU: 1,055 against 598 us per job
-- for an enqueue, two claims and an ack, with these functions planned once.
--
-- A generic plan is fixed with the table statistics of the moment it is
-- made, so this statement is written so that no statistics can turn its
-- plan into a scan of the table:
--   * sequential and bitmap scans are off inside it (and so is JIT, which
--     the cost those switches add would otherwise trigger on every call:
--     see heartbeat_leases.sql);
--   * it reads jobs_claim_idx, the only index whose order and predicate fit
--     its inner query;
--   * its UPDATE finds the locked rows by ctid, which only a TID scan can
--     serve. With "state = 'available'" (the claim index's predicate) in the
--     UPDATE's WHERE, a plan made on a small or empty table scanned the
--     whole claim index instead. The recheck is not needed: the rows are
--     locked by this statement (FOR UPDATE re-evaluates the WHERE on the
--     row version it locks), so none can have changed, and no ctid can move.
--
-- Each queue is read through jobs_claim_idx in delivery order (LATERAL, one
-- index range per queue, so several queues never force a sort of the whole
-- backlog); SKIP LOCKED lets concurrent claimers pass each other's rows
-- instead of queueing behind them. The lease length is the job's own, else
-- the worker's, else the queue's, else the broker default; the queues'
-- lease lengths come in as one jsonb row (cfg), not a lookup per claimed
-- row. Its UPDATE once found the claimed rows through a join to the CTE
-- that locked them; once the backlog grew, Postgres hashed a sequential
-- scan of the whole table for it: 43 ms per 500-job claim over 50,000
-- available jobs, against ~5 ms with the rows passed as an array.
CREATE OR REPLACE FUNCTION jobwire.claim_plain(queues text[], lim int, worker_lease_ms int, default_lease_ms int, worker text)
RETURNS SETOF jobwire.claimed LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
  WITH next AS (
    SELECT c.ctid FROM unnest(queues) AS qn(name)
    CROSS JOIN LATERAL (
      SELECT j.ctid, j.id, j.priority, j.queued_at FROM jobwire.jobs j
      WHERE j.state = 'available' AND j.concurrency_key IS NULL AND j.ordering_key IS NULL AND j.queue = qn.name
      ORDER BY j.priority DESC, j.queued_at, j.id
      LIMIT lim
      FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.queued_at, c.id
    LIMIT lim
  ), cfg AS (
    SELECT coalesce(jsonb_object_agg(q.name, q.lease_ms), '{}') AS lease_ms
    FROM jobwire.queues q WHERE q.name = ANY (queues) AND q.lease_ms IS NOT NULL
  )
  UPDATE jobwire.jobs j
  SET state = 'running', attempt = j.attempt + 1, lease_token = gen_random_uuid(),
      leased_for_ms = coalesce(j.lease_ms, worker_lease_ms, (cfg.lease_ms ->> j.queue)::int, default_lease_ms),
      lease_expires_at = now()
        + coalesce(j.lease_ms, worker_lease_ms, (cfg.lease_ms ->> j.queue)::int, default_lease_ms) * interval '1 millisecond',
      worker_id = worker, cancel_requested = false
  FROM cfg
  WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM next))
  RETURNING j.id, j.queue, j.type, j.payload, j.content_type, j.priority, j.attempt, j.max_attempts,
            j.run_at, j.created_at, j.headers, j.idempotency_key, nullif(j.errors, '[]'), j.errors_dropped,
            j.lease_expires_at, j.lease_ms, j.lease_token, j.concurrency_key, j.ordering_key
$$;
