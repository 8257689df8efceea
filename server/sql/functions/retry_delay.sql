-- The wait before the next attempt:
--   delay = min(max, initial * multiplier^(attempt-1)) * (1 - jitter * random())
-- Each field comes from the job's policy, else the queue's, else the default
-- (README.md, "Retries and dead letters").
--
-- It saturates at max and cannot overflow, whatever the attempt: the power
-- is taken in log space and capped at ln(max) before exp(). Computed as
-- initial * power(multiplier, attempt - 1), attempt 160 at multiplier 100
-- raised "value out of range: overflow", and that one row failed every
-- reaper pass on every replica. The broker bounds the inputs it accepts
-- (broker/validate.ts: backoffs up to 365 days, multiplier 1 to 100,
-- jitter 0 to 1); the clamps here also cover rows written before those
-- bounds, or by hand.
CREATE OR REPLACE FUNCTION jobwire.retry_delay(attempt int, job_policy jsonb, queue_policy jsonb)
RETURNS interval LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT make_interval(secs => CASE
           WHEN p.initial_ms <= 0 OR p.max_ms <= 0 THEN 0
           ELSE exp(least(ln(p.max_ms), ln(p.initial_ms) + greatest(attempt - 1, 0) * ln(p.multiplier)))
                * (1 - p.jitter * random()) / 1000.0
         END)
  FROM (SELECT
          least(coalesce((job_policy->>'initial_ms')::float8, (queue_policy->>'initial_ms')::float8, 1000), 31536000000)   AS initial_ms,
          least(coalesce((job_policy->>'max_ms')::float8,     (queue_policy->>'max_ms')::float8,     3600000), 31536000000) AS max_ms,
          least(greatest(coalesce((job_policy->>'multiplier')::float8, (queue_policy->>'multiplier')::float8, 2), 1), 100) AS multiplier,
          least(greatest(coalesce((job_policy->>'jitter')::float8,     (queue_policy->>'jitter')::float8,     0.2), 0), 1) AS jitter
       ) p
$$;
