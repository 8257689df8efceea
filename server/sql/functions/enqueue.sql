-- Transactional enqueue, for applications that share the database:
--
--   BEGIN;
--   INSERT INTO accounts (email) VALUES ('ada@example.com') RETURNING id;   -- say 42
--   SELECT jobwire.enqueue('emails', 'send_welcome_email', '{"user_id": 42}');
--   COMMIT;
--
-- The job exists, and wakes workers, only if the transaction commits.
-- Returns the job id, or the live job's id when idempotency_key is taken.
--
-- It checks its arguments as the gRPC Enqueue does (broker/validate.ts),
-- with the same limits, and raises invalid_parameter_value (22023) naming
-- the argument, with a hint: a job that gRPC would refuse must not get in
-- through SQL, where nobody would see the error until a worker choked on it.
CREATE OR REPLACE FUNCTION jobwire.enqueue(
  queue text,
  type text,
  payload jsonb DEFAULT '{}',
  run_at timestamptz DEFAULT NULL,
  priority int DEFAULT 0,
  max_attempts int DEFAULT NULL,
  idempotency_key text DEFAULT NULL,
  idempotency_ttl interval DEFAULT interval '24 hours',
  headers jsonb DEFAULT '{}',
  lease_duration interval DEFAULT NULL,
  concurrency_key text DEFAULT NULL,
  ordering_key text DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  new_id bigint;
  due timestamptz := coalesce(enqueue.run_at, now());
  v_lease_ms bigint;
  default_attempts int;
  max_payload int;
BEGIN
  -- The broker writes its JOBWIRE_DEFAULT_MAX_ATTEMPTS and
  -- JOBWIRE_MAX_PAYLOAD_BYTES here at start-up; before any has, the defaults.
  SELECT (SELECT (s.value #>> '{}')::int FROM jobwire.settings s WHERE s.name = 'default_max_attempts'),
         coalesce((SELECT (s.value #>> '{}')::int FROM jobwire.settings s WHERE s.name = 'max_payload_bytes'), 1048576)
    INTO default_attempts, max_payload;

  IF queue IS NULL OR queue !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' THEN
    RAISE EXCEPTION 'jobwire.enqueue: invalid queue name %', quote_nullable(queue) USING ERRCODE = '22023',
      HINT = '1 to 128 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit';
  END IF;
  IF type IS NULL OR length(type) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'jobwire.enqueue: type must be 1 to 255 characters' USING ERRCODE = '22023';
  END IF;
  IF max_attempts IS NOT NULL AND max_attempts NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION 'jobwire.enqueue: max_attempts must be from 1 to 1000000, got %', max_attempts USING ERRCODE = '22023';
  END IF;
  IF enqueue.run_at IS NOT NULL AND (enqueue.run_at < '0001-01-01 00:00:00+00' OR enqueue.run_at >= '10000-01-01 00:00:00+00') THEN
    RAISE EXCEPTION 'jobwire.enqueue: run_at % is outside years 1 to 9999', enqueue.run_at USING ERRCODE = '22023';
  END IF;
  IF lease_duration IS NOT NULL THEN
    v_lease_ms := round(extract(epoch FROM lease_duration) * 1000);
    IF v_lease_ms NOT BETWEEN 100 AND 86400000 THEN
      RAISE EXCEPTION 'jobwire.enqueue: lease_duration must be between 100 ms and 24 hours, got %', lease_duration
        USING ERRCODE = '22023', HINT = 'leave it NULL for the queue''s lease, else the broker default (30 seconds)';
    END IF;
  END IF;
  IF idempotency_key IS NOT NULL AND (length(idempotency_key) > 255 OR idempotency_key = '') THEN
    RAISE EXCEPTION 'jobwire.enqueue: idempotency_key must be 1 to 255 characters' USING ERRCODE = '22023';
  END IF;
  IF idempotency_ttl IS NULL OR idempotency_ttl <= interval '0' OR idempotency_ttl > interval '3650 days' THEN
    RAISE EXCEPTION 'jobwire.enqueue: idempotency_ttl must be positive and at most 3650 days, got %', quote_nullable(idempotency_ttl)
      USING ERRCODE = '22023', HINT = 'the default is 24 hours';
  END IF;
  IF concurrency_key IS NOT NULL AND length(concurrency_key) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'jobwire.enqueue: concurrency_key must be 1 to 255 characters' USING ERRCODE = '22023',
      HINT = 'NULL means no key';
  END IF;
  IF ordering_key IS NOT NULL AND length(ordering_key) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'jobwire.enqueue: ordering_key must be 1 to 255 characters' USING ERRCODE = '22023',
      HINT = 'NULL means no key';
  END IF;
  IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
    RAISE EXCEPTION 'jobwire.enqueue: headers must be a JSON object of strings, got %', jsonb_typeof(headers) USING ERRCODE = '22023';
  END IF;
  IF headers IS NOT NULL AND EXISTS (SELECT 1 FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string') THEN
    RAISE EXCEPTION 'jobwire.enqueue: every header value must be a string' USING ERRCODE = '22023',
      HINT = 'for example ''{"traceparent": "00-..."}''';
  END IF;
  IF octet_length(payload::text) > max_payload THEN
    RAISE EXCEPTION 'jobwire.enqueue: payload is % bytes, over the %-byte limit', octet_length(payload::text), max_payload
      USING ERRCODE = '54000';
  END IF;

  IF enqueue.idempotency_key IS NOT NULL THEN
    UPDATE jobwire.jobs j SET idempotency_released = true
     WHERE j.queue = enqueue.queue AND j.idempotency_key = enqueue.idempotency_key
       AND NOT j.idempotency_released AND j.idempotency_expires_at <= now();
  END IF;
  INSERT INTO jobwire.jobs (queue, type, payload, state, run_at, queued_at, priority, max_attempts, lease_ms,
                            idempotency_key, idempotency_expires_at, headers, concurrency_key, ordering_key)
  VALUES (enqueue.queue, enqueue.type, convert_to(enqueue.payload::text, 'UTF8'),
          CASE WHEN due > now() THEN 'scheduled' ELSE 'available' END::jobwire.job_state,
          due, due, enqueue.priority,
          coalesce(enqueue.max_attempts, (SELECT q.max_attempts FROM jobwire.queues q WHERE q.name = enqueue.queue),
                   default_attempts, 25),
          v_lease_ms,
          enqueue.idempotency_key,
          CASE WHEN enqueue.idempotency_key IS NOT NULL THEN now() + enqueue.idempotency_ttl END,
          coalesce(enqueue.headers, '{}'), enqueue.concurrency_key, enqueue.ordering_key)
  ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL AND NOT idempotency_released
  DO NOTHING
  RETURNING id INTO new_id;
  IF new_id IS NULL THEN
    SELECT j.id INTO new_id FROM jobwire.jobs j
     WHERE j.queue = enqueue.queue AND j.idempotency_key = enqueue.idempotency_key AND NOT j.idempotency_released;
  END IF;
  RETURN new_id;
END
$$;
