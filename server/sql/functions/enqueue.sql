-- Transactional enqueue, for applications that share the database:
--
--   BEGIN;
--   INSERT INTO accounts (email) VALUES ('ada@example.com') RETURNING id;   -- say 42
--   SELECT jobwire.enqueue('emails', 'send_welcome_email', '{"user_id": 42}');
--   COMMIT;
--
-- The job exists, and wakes workers, only if the transaction commits.
-- Returns the job id, or the live job's id when idempotency_key is taken.
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
  lease_duration interval DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  new_id bigint;
  due timestamptz := coalesce(enqueue.run_at, now());
BEGIN
  IF queue IS NULL OR queue !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' THEN
    RAISE EXCEPTION 'jobwire.enqueue: invalid queue name %', quote_nullable(queue) USING ERRCODE = '22023';
  END IF;
  IF type IS NULL OR length(type) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'jobwire.enqueue: type must be 1 to 255 characters' USING ERRCODE = '22023';
  END IF;
  IF max_attempts IS NOT NULL AND max_attempts < 1 THEN
    RAISE EXCEPTION 'jobwire.enqueue: max_attempts must be at least 1' USING ERRCODE = '22023';
  END IF;
  IF enqueue.idempotency_key IS NOT NULL THEN
    UPDATE jobwire.jobs j SET idempotency_released = true
     WHERE j.queue = enqueue.queue AND j.idempotency_key = enqueue.idempotency_key
       AND NOT j.idempotency_released AND j.idempotency_expires_at <= now();
  END IF;
  INSERT INTO jobwire.jobs (queue, type, payload, state, run_at, priority, max_attempts, lease_ms,
                            idempotency_key, idempotency_expires_at, headers)
  VALUES (enqueue.queue, enqueue.type, convert_to(enqueue.payload::text, 'UTF8'),
          CASE WHEN due > now() THEN 'scheduled' ELSE 'available' END::jobwire.job_state,
          due, enqueue.priority,
          coalesce(enqueue.max_attempts, (SELECT q.max_attempts FROM jobwire.queues q WHERE q.name = enqueue.queue), 25),
          (extract(epoch FROM enqueue.lease_duration) * 1000)::int,
          enqueue.idempotency_key,
          CASE WHEN enqueue.idempotency_key IS NOT NULL THEN now() + enqueue.idempotency_ttl END,
          coalesce(enqueue.headers, '{}'))
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
