-- History: the functions this migration created are redefined by
-- server/sql/functions/*.sql, applied after every migration. Read those for
-- what runs now; this file only says how the schema got here.
--
-- Ack, heartbeat and release: the statements that touch many leased rows at
-- once, as functions.
--
-- The same row can be in two of them at the same time (a worker's heartbeat
-- crossing its own ack), so they must lock rows in one order or they
-- deadlock. Each finds its rows with "id = ANY(ids)" through an index ordered
-- by id (the primary key or jobs_running_idx), whose scan visits the ids in
-- ascending order, so every call locks in id order. A sequential or bitmap
-- scan would lock in physical order instead, which differs between
-- snapshots; the planner picks one when the table is small. The SET clauses
-- rule those out for these statements only.
--
-- There is no join. Joined to unnest(ids, tokens), the planner (told by
-- ANALYZE that almost nothing runs) chose a nested loop over both lists:
-- O(tokens^2), 130-400 ms for a 500-token ack. The token is checked with
-- "lease_token = ANY(tokens)" instead. That pairs each row with its own token
-- as long as every id appears once per call: a lease's uuid is random and new
-- for every lease. The broker splits repeated ids into further calls.

CREATE FUNCTION jobwire.ack_leases(ids bigint[], tokens uuid[])
RETURNS TABLE (id bigint) LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
  UPDATE jobwire.jobs j
  SET state = 'completed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL
  WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = ANY (tokens)
  RETURNING j.id
$$;

-- extend_ms null: extend by the length the lease was granted with.
CREATE FUNCTION jobwire.heartbeat_leases(ids bigint[], tokens uuid[], extend_ms int)
RETURNS TABLE (id bigint, lease_expires_at timestamptz, cancel_requested boolean) LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
  UPDATE jobwire.jobs j
  SET lease_expires_at = now() + coalesce(extend_ms, j.leased_for_ms) * interval '1 millisecond'
  WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = ANY (tokens)
  RETURNING j.id, j.lease_expires_at, j.cancel_requested
$$;

-- Gives back leases a stream could not deliver; the attempt is not counted.
CREATE FUNCTION jobwire.release_leases(ids bigint[], tokens uuid[])
RETURNS TABLE (id bigint, queue text) LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
  UPDATE jobwire.jobs j
  SET state = 'available', attempt = j.attempt - 1, lease_token = NULL, lease_expires_at = NULL,
      leased_for_ms = NULL, worker_id = NULL
  WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = ANY (tokens)
  RETURNING j.id, j.queue
$$;
