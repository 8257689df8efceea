-- The keys the gated claim (claim_gated.sql) takes in turn: up to n
-- distinct keys of queue q that have waiting work, in key order, starting
-- after `after` (the queue's cursor) and wrapping around once. Each step is
-- one descent of a key index (a loose index scan: WHERE key > previous ORDER
-- BY key LIMIT 1), so the cost follows the keys taken, never the jobs
-- behind them: a key with 100,000 waiting jobs costs one step, like a key
-- with one.

-- Concurrency keys with available jobs (jobs_claim_key_idx).
CREATE OR REPLACE FUNCTION jobwire.concurrency_keys_after(q text, after text, n int) RETURNS text[]
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
      SELECT j.concurrency_key INTO nk FROM jobwire.jobs j
      WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL AND j.queue = q
      ORDER BY j.concurrency_key LIMIT 1;
    ELSE
      SELECT j.concurrency_key INTO nk FROM jobwire.jobs j
      WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL AND j.queue = q
        AND j.concurrency_key > k
      ORDER BY j.concurrency_key LIMIT 1;
    END IF;
    IF nk IS NULL THEN
      EXIT WHEN wrapped;
      wrapped := true;
      k := NULL;
      CONTINUE;
    END IF;
    -- Around once: back past where it started.
    EXIT WHEN wrapped AND after IS NOT NULL AND nk > after;
    out := out || nk;
    k := nk;
  END LOOP;
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
