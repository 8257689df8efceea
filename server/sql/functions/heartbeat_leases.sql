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
-- one order or they would deadlock. Each finds its rows with
-- "id = ANY(ids)" through the primary key, whose scan visits the ids in
-- ascending order, so every call locks in id order. A sequential or bitmap
-- scan would lock in physical order instead, which differs between
-- snapshots; the planner picks one when the table is small. The SET clauses
-- rule those out for these statements only.
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
  UPDATE jobwire.jobs j
  SET lease_expires_at = now() + coalesce(extend_ms, j.leased_for_ms) * interval '1 millisecond'
  WHERE j.id = ANY (ids) AND j.state = 'running' AND j.lease_token = (pairs ->> j.id::text)::uuid
  RETURNING j.id, j.lease_expires_at, j.cancel_requested
$$;
