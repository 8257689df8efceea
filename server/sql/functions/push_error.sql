-- Appends one failed attempt to a job's error history, keeping it bounded:
-- the first 3 entries (what broke first), the last 20 (what breaks now),
-- and no more than 128 KiB of JSON, dropping the oldest after the first
-- while over (but always keeping the first and the newest, each at most
-- 64 KiB of message). `dropped` counts what was left out
-- (jobs.errors_dropped), so GetJob can say so.
--
-- The history, the largest payload and headers must fit in one message, or
-- the job could be neither delivered nor read: config.ts refuses limits
-- that leave less than JOB_OVERHEAD_BYTES (160 KiB) beside the payload.
CREATE OR REPLACE FUNCTION jobwire.push_error(errors jsonb, dropped int, entry jsonb, OUT kept jsonb, OUT dropped_total int)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  keep_first CONSTANT int := 3;
  keep_last  CONSTANT int := 20;
  max_bytes  CONSTANT int := 131072;
  n int;
BEGIN
  kept := errors || jsonb_build_array(entry);
  dropped_total := dropped;
  n := jsonb_array_length(kept);
  IF n > keep_first + keep_last THEN
    kept := (SELECT jsonb_agg(e ORDER BY i) FROM jsonb_array_elements(kept) WITH ORDINALITY a(e, i)
             WHERE i <= keep_first OR i > n - keep_last);
    dropped_total := dropped_total + n - keep_first - keep_last;
  END IF;
  -- Only long messages can get here (each is at most 64 KiB).
  WHILE octet_length(kept::text) > max_bytes AND jsonb_array_length(kept) > 2 LOOP
    kept := kept - 1;
    dropped_total := dropped_total + 1;
  END LOOP;
END
$$;
