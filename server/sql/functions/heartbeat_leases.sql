-- Heartbeat: extends the leases that are still current.
--
-- The leased-row functions (ack_leases, heartbeat_leases, release_leases)
-- take the leases as `pairs`, one jsonb object {"<id>": "<token uuid>"},
-- and `ids`, the same ids as an array. A row matches only the token paired
-- with its own id: with a list of ids and a list of tokens matched apart,
-- Ack(["A.<uuid of B>", "B.<uuid of A>"]) completed both jobs. The lookup
-- is a binary search in the object's sorted keys. Each id appears once per
-- call; the broker splits repeated ids into further calls.
--
-- The same row can be in a heartbeat and an ack at the same time (a
-- worker's heartbeat crossing its own ack), so these functions lock rows in
-- one order, ascending id, or they would deadlock. The order is explicit:
-- "ORDER BY id FOR UPDATE" locks after sorting, whatever index the planner
-- reads. Relying on the primary key's scan order was not enough: on a table
-- with no statistics the planner read jobs_running_idx (queue,
-- concurrency_key) in full instead, whose entries follow the rows' physical
-- order, which every update changes, and a heartbeat and an ack over the
-- same 400 rows deadlocked (a second's wait, then one of them failed). The
-- UPDATE then finds its already-locked rows by id: ~15% more time per call
-- (1.03 -> 1.18 ms for 100 leases), for no deadlock under any plan.
-- Rows match by (id, token) alone, with no "state = 'running'": a token
-- exists only while its job runs (a CHECK constraint,
-- migrations/009_lease_token_running.sql), and that predicate let the
-- planner read the partial index of running jobs in full for every call.
-- enable_seqscan and enable_bitmapscan are off so that the lookups stay
-- primary-key probes, at O(leases) rather than a scan of the table.
--
-- Those switches make the planner price the other plans at about 10^10,
-- and a Postgres with JIT on (the default of Debian's packages and most
-- managed services) then compiled every call: 45-270 ms per ack instead of
-- 0.27 ms on Debian's Postgres 15. jit = off here, and on every broker
-- connection (store/db.ts).
--
-- There is no join. Joined to unnest(ids, tokens), the planner (told by
-- ANALYZE that almost nothing runs) chose a nested loop over both lists:
-- O(tokens^2), 130-400 ms for a 500-token ack.
--
-- extend_ms null: extend by the length the lease was granted with.
CREATE OR REPLACE FUNCTION jobwire.heartbeat_leases(ids bigint[], pairs jsonb, extend_ms int)
RETURNS TABLE (id bigint, lease_expires_at timestamptz, cancel_requested boolean) LANGUAGE sql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
  WITH locked AS (
    SELECT j.id FROM jobwire.jobs j
    WHERE j.id = ANY (ids) AND j.lease_token = (pairs ->> j.id::text)::uuid
    ORDER BY j.id
    FOR UPDATE
  )
  UPDATE jobwire.jobs j
  SET lease_expires_at = now() + coalesce(extend_ms, j.leased_for_ms) * interval '1 millisecond'
  FROM locked l
  WHERE j.id = l.id
  RETURNING j.id, j.lease_expires_at, j.cancel_requested
$$;
