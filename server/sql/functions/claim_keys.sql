-- The keys the gated claim (claim_gated.sql) takes in turn: up to n
-- distinct keys of queue q that have waiting work, in key order, starting
-- after `after` (the queue's cursor) and wrapping around once. Each step is
-- one descent of a key index (a loose index scan: WHERE key > previous ORDER
-- BY key LIMIT 1), so the cost follows the keys taken, never the jobs
-- behind them: a key with 100,000 waiting jobs costs one step, like a key
-- with one.

-- Concurrency keys with available jobs (jobs_claim_key_idx), and each
-- key's first job in claim order. The index is ordered (queue, key,
-- priority DESC, queued_at, id), so the step that finds the next key lands
-- on that key's first job: the claim takes it from here instead of a
-- second descent per key.
--
-- The keys visited are those in the circular range (after, stop]: from
-- just after `after` to `stop` inclusive, wrapping past the last key when
-- stop <= after (stop = after: the whole circle, the claim's first round).
-- A null `after` starts at the first key; a null `stop` ends at the last.
DROP FUNCTION IF EXISTS jobwire.concurrency_keys_after(text, text, int);
CREATE OR REPLACE FUNCTION jobwire.concurrency_heads_after(q text, after text, n int, stop text,
  OUT keys text[], OUT ids bigint[], OUT priorities int[], OUT queued timestamptz[])
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
  k text := after;
  nk text;
  nid bigint;
  nprio int;
  nqueued timestamptz;
  -- The range wraps past the last key only when it ends at or before where it starts.
  may_wrap boolean := after IS NOT NULL AND stop IS NOT NULL AND stop <= after;
  wrapped boolean := false;
BEGIN
  keys := '{}';
  ids := '{}';
  priorities := '{}';
  queued := '{}';
  WHILE cardinality(keys) < n LOOP
    IF k IS NULL THEN
      SELECT j.concurrency_key, j.id, j.priority, j.queued_at INTO nk, nid, nprio, nqueued FROM jobwire.jobs j
      WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL AND j.queue = q
      ORDER BY j.concurrency_key, j.priority DESC, j.queued_at, j.id LIMIT 1;
    ELSE
      SELECT j.concurrency_key, j.id, j.priority, j.queued_at INTO nk, nid, nprio, nqueued FROM jobwire.jobs j
      WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL AND j.queue = q
        AND j.concurrency_key > k
      ORDER BY j.concurrency_key, j.priority DESC, j.queued_at, j.id LIMIT 1;
    END IF;
    IF nk IS NULL THEN
      EXIT WHEN NOT may_wrap OR wrapped;
      wrapped := true;
      k := NULL;
      CONTINUE;
    END IF;
    -- Past the end of the range: on the far side of the wrap, or in a range that does not wrap.
    EXIT WHEN stop IS NOT NULL AND nk > stop AND (wrapped OR NOT may_wrap);
    keys := keys || nk;
    ids := ids || nid;
    priorities := priorities || nprio;
    queued := queued || nqueued;
    k := nk;
  END LOOP;
END
$$;

-- Each key's quota for one claim: max_running_per_key less the key's
-- running jobs, and what its rate limiter allows now (the smaller), as a
-- jsonb object key -> quota. The caller reads it once per candidate.
CREATE OR REPLACE FUNCTION jobwire.key_quotas(q text, keys text[], per_key int, rate_count int, rate_period_ms bigint, budget int)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
  out jsonb;
BEGIN
  IF rate_count IS NULL THEN
    -- A per-key cap alone: no limiter to join (a 250-job claim over 250
    -- keys, 6.08 -> 5.94 ms).
    SELECT coalesce(jsonb_object_agg(u.key, per_key - (
             SELECT count(*)::int FROM jobwire.jobs j
             WHERE j.state = 'running' AND j.queue = q AND j.concurrency_key = u.key)), '{}') INTO out
    FROM unnest(keys) u(key);
  ELSE
    SELECT coalesce(jsonb_object_agg(u.key, least(
             coalesce(per_key - (SELECT count(*)::int FROM jobwire.jobs j
                                 WHERE j.state = 'running' AND j.queue = q AND j.concurrency_key = u.key), budget),
             jobwire.rate_allowance(b.tat, rate_count, rate_period_ms))), '{}') INTO out
    FROM unnest(keys) u(key)
    LEFT JOIN jobwire.rate_buckets b ON b.queue = q AND b.key = u.key;
  END IF;
  RETURN out;
END
$$;

-- Ordering keys with a job waiting or holding the key (jobs_ordering_idx).
CREATE OR REPLACE FUNCTION jobwire.ordering_keys_after(q text, after text, n int) RETURNS text[]
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
  out text[] := '{}';
  k text := after;
  nk text;
  wrapped boolean := after IS NULL;
BEGIN
  WHILE cardinality(out) < n LOOP
    IF k IS NULL THEN
      SELECT j.ordering_key INTO nk FROM jobwire.jobs j
      WHERE j.ordering_key IS NOT NULL AND j.state IN ('available', 'running', 'retryable') AND j.queue = q
      ORDER BY j.ordering_key LIMIT 1;
    ELSE
      SELECT j.ordering_key INTO nk FROM jobwire.jobs j
      WHERE j.ordering_key IS NOT NULL AND j.state IN ('available', 'running', 'retryable') AND j.queue = q
        AND j.ordering_key > k
      ORDER BY j.ordering_key LIMIT 1;
    END IF;
    IF nk IS NULL THEN
      EXIT WHEN wrapped;
      wrapped := true;
      k := NULL;
      CONTINUE;
    END IF;
    EXIT WHEN wrapped AND after IS NOT NULL AND nk > after;
    out := out || nk;
    k := nk;
  END LOOP;
  RETURN out;
END
$$;

-- How many starts a rate limiter allows now, GCRA-style: `count` per
-- `period_ms`, and a limiter idle for a period allows `count` at once.
-- tat is the limiter's theoretical arrival time (null: idle).
CREATE OR REPLACE FUNCTION jobwire.rate_allowance(tat timestamptz, count int, period_ms bigint) RETURNS int
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN count IS NULL THEN 2147483647
              ELSE least(count, greatest(0, floor(
                     (extract(epoch FROM now() - greatest(coalesce(tat, now()), now())) * 1000 + period_ms)
                     / (period_ms::float8 / count))))::int
         END
$$;

-- A limiter's tat after `n` more starts.
CREATE OR REPLACE FUNCTION jobwire.rate_spend(tat timestamptz, count int, period_ms bigint, n int) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
  SELECT greatest(coalesce(tat, now()), now()) + (n * period_ms::float8 / count) * interval '1 millisecond'
$$;
