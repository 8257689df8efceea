-- The wait before the next attempt:
--   delay = min(max, initial * multiplier^(attempt-1)) * (1 - jitter * random())
-- Each field comes from the job's policy, else the queue's, else the default
-- (the defaults documented in README.md, "Retries and dead letters").
CREATE OR REPLACE FUNCTION jobwire.retry_delay(attempt int, job_policy jsonb, queue_policy jsonb)
RETURNS interval LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT make_interval(secs => least(p.max_ms, p.initial_ms * power(p.multiplier, least(greatest(attempt - 1, 0), 200)))
                               * (1 - p.jitter * random()) / 1000.0)
  FROM (SELECT
          coalesce((job_policy->>'initial_ms')::float8, (queue_policy->>'initial_ms')::float8, 1000)    AS initial_ms,
          coalesce((job_policy->>'max_ms')::float8,     (queue_policy->>'max_ms')::float8,     3600000) AS max_ms,
          coalesce((job_policy->>'multiplier')::float8, (queue_policy->>'multiplier')::float8, 2)       AS multiplier,
          coalesce((job_policy->>'jitter')::float8,     (queue_policy->>'jitter')::float8,     0.2)     AS jitter
       ) p
$$;
