-- The claim's gated path, for one queue that has limits (max_running,
-- max_running_per_key, rate_limit, rate_limit_per_key) or jobs with keys
-- (concurrency_key, ordering_key). claim_jobs.sql sends such queues here.
--
-- Limits hold across every broker replica because claims of one gated
-- queue take turns: a transaction-scoped advisory lock per queue, held
-- until the claim commits. The next claim's statements then see the rows
-- the last one marked running, so counting RUNNING rows is exact (acks,
-- nacks and the reaper only lower the counts meanwhile). Claims of other
-- queues, and the fast path, never wait on it.
--
-- What it takes, in turn (fairness): each concurrency key with waiting jobs
-- is a group, plain jobs are one more group, and each ordering key offers
-- its head. Groups are taken round-robin: first every group's first job,
-- then every group's second, and so on (priority, then place in line,
-- orders jobs within a group and breaks ties within a round), up to four
-- jobs from each concurrency key in a claim (the quantum; more only when
-- the claim has room left after every key with work had its turn). Keys
-- are visited from a cursor that moves on each claim, so with more keys
-- than one claim can take, the next claim starts where this one stopped:
-- a key with one job behind other keys' backlogs waits at most
-- ceil(keys / ceil(claim size / 4)) claims, and behind one key's 100,000
-- jobs, one claim.
--
-- An ordering key's head is its first job in line (queued_at, then id)
-- among those available, running or retrying; only an available head may
-- start, so the key's jobs run one at a time and in order. A job waiting
-- for a retry keeps the key; one that completes, dies or is cancelled lets
-- the next one start.
--
-- A job held back by a limit stays available: no attempt is charged.
CREATE OR REPLACE FUNCTION jobwire.claim_gated(q text, lim int, worker_lease_ms int, default_lease_ms int, worker text)
RETURNS SETOF jobwire.claimed LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
  c jobwire.queues%ROWTYPE;
  budget int := lim;
  queue_tat timestamptz;
  allowed int;
  cur jobwire.queue_cursors%ROWTYPE;
  keys text[];
  want int;
  round_keys text[];
  quota_keys text[];
  use_heads boolean;
  per_key int;
  plain_lim int;
  head_ids bigint[];
  head_priorities int[];
  head_queued timestamptz[];
  okeys text[];
  ngroups int;
  share int;
  quotas jsonb := '{}';
  used jsonb := '{}';
  taken bigint[] := '{}';
  picked_ids bigint[];
  last_key text;
  last_okey text;
  n int := 0;
  blocked text[] := '{}';
  next_start timestamptz;
  key_next timestamptz;
BEGIN
  SELECT * INTO c FROM jobwire.queues WHERE name = q;
  IF c.paused THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('jobwire.claim:' || q, 0));

  IF c.max_running IS NOT NULL THEN
    budget := least(budget, c.max_running - (SELECT count(*)::int FROM jobwire.jobs j WHERE j.state = 'running' AND j.queue = q));
  END IF;
  IF c.rate_count IS NOT NULL THEN
    SELECT b.tat INTO queue_tat FROM jobwire.rate_buckets b WHERE b.queue = q AND b.key = '';
    allowed := jobwire.rate_allowance(queue_tat, c.rate_count, c.rate_period_ms);
    IF allowed <= 0 THEN
      -- Say when the next start is allowed: tat - period + period/count.
      RETURN NEXT ROW(NULL, q, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                      queue_tat - (c.rate_period_ms - c.rate_period_ms::float8 / c.rate_count) * interval '1 millisecond',
                      NULL, NULL, NULL, NULL)::jobwire.claimed;
      RETURN;
    END IF;
    budget := least(budget, allowed);
  END IF;
  IF budget <= 0 THEN
    RETURN;
  END IF;

  SELECT * INTO cur FROM jobwire.queue_cursors WHERE queue = q;
  -- Visit enough keys for up to four jobs each (the quantum): every key
  -- visited costs index steps (finding it, counting its running jobs,
  -- reading its jobs) whatever it yields, so with many keys taking up to
  -- four from each halves the steps per job of taking one from each. With
  -- 1,000 keys under max_running_per_key 5 (bench `limits`): Postgres
  -- 36 -> 26-27 us per job, 0.67-0.71x -> 0.78-0.85x the unlimited
  -- burn-down. If the keys hold fewer jobs than that (or their
  -- quotas allow fewer), round 2 visits more keys, one job from each.
  want := ceil(budget::numeric / 4)::int;
  SELECT h.keys, h.ids, h.priorities, h.queued INTO keys, head_ids, head_priorities, head_queued
  FROM jobwire.concurrency_heads_after(q, cur.key_cursor, want, cur.key_cursor) h;
  okeys := jobwire.ordering_keys_after(q, cur.order_cursor, budget);
  ngroups := cardinality(keys) + cardinality(okeys) + 1;
  share := greatest(1, ceil(budget::numeric / ngroups)::int);
  last_key := keys[cardinality(keys)];

  -- Each key's quota: what its running jobs and its rate limiter leave.
  -- An ordering key's head counts against its concurrency key too.
  IF c.max_running_per_key IS NOT NULL OR c.key_rate_count IS NOT NULL THEN
    quota_keys := keys;
    IF cardinality(okeys) > 0 THEN
      quota_keys := quota_keys || ARRAY(
        SELECT DISTINCT h.concurrency_key FROM unnest(okeys) ok(key)
        CROSS JOIN LATERAL (SELECT j.concurrency_key FROM jobwire.jobs j
                            WHERE j.ordering_key IS NOT NULL AND j.state IN ('available', 'running', 'retryable')
                              AND j.queue = q AND j.ordering_key = ok.key
                            ORDER BY j.queued_at, j.id LIMIT 1) h
        WHERE h.concurrency_key IS NOT NULL AND NOT h.concurrency_key = ANY (keys));
    END IF;
    quotas := jobwire.key_quotas(q, quota_keys, c.max_running_per_key, c.key_rate_count, c.key_rate_period_ms, budget);
  END IF;

  -- Round-robin: rank within each group, then take rank by rank.
  --   Round 1: up to `share` jobs of each group (each concurrency key
  --     visited, plain jobs, each ordering key's head).
  --   Round 2, when round 1 left budget unused and keys remain unvisited:
  --     more keys, from where round 1 stopped up to the cursor, one job
  --     each (the first job the key step found).
  --   Round 3, when budget is still unused (few groups, one of them long):
  --     past the first `share` of every group visited.
  --
  -- Each round is one statement: a candidate of key k is taken when it is
  -- among the first quota(k) - used(k) of k's candidates in the round's
  -- order (row_number over the key), and the round takes the first rows
  -- of that order up to the budget. A loop over the candidates did the
  -- same one row at a time, and rewrote its jsonb of counts per row: with
  -- 1,000 keys under max_running_per_key 5, Postgres 57 -> 44 us per job,
  -- 0.50x -> 0.62-0.66x the unlimited burn-down (bench `limits`). Taking
  -- each key's first job from the key step instead of a second descent,
  -- 44 -> 36 us (claim alone 7.2 -> 6.1 ms for 250 jobs). A recursive CTE
  -- for the keys instead of claim_keys.sql's loop measured worse (71 us),
  -- or the same (2.3 ms for 250 keys alone).
  FOR pass IN 1..3 LOOP
    EXIT WHEN cardinality(taken) >= budget;
    IF pass = 1 THEN
      round_keys := keys;
      use_heads := share = 1;
      per_key := share;
      plain_lim := share;
    ELSIF pass = 2 THEN
      -- Every key with waiting work was visited already.
      CONTINUE WHEN cardinality(keys) < want OR last_key IS NOT DISTINCT FROM cur.key_cursor;
      SELECT h.keys, h.ids, h.priorities, h.queued INTO round_keys, head_ids, head_priorities, head_queued
      FROM jobwire.concurrency_heads_after(q, last_key, budget - cardinality(taken), cur.key_cursor) h;
      CONTINUE WHEN cardinality(round_keys) = 0;
      last_key := round_keys[cardinality(round_keys)];
      IF c.max_running_per_key IS NOT NULL OR c.key_rate_count IS NOT NULL THEN
        quotas := quotas || jobwire.key_quotas(q, round_keys, c.max_running_per_key, c.key_rate_count, c.key_rate_period_ms, budget);
      END IF;
      keys := keys || round_keys;
      use_heads := true;
      per_key := 1;
      plain_lim := 0;
    ELSE
      -- Keys whose quota is spent have nothing more to give: skip their
      -- jobs (a queue with every key at its cap: claim 16 -> 5 ms).
      round_keys := ARRAY(SELECT k.key FROM unnest(keys) k(key)
                          WHERE coalesce((quotas ->> k.key)::int, budget) > coalesce((used ->> k.key)::int, 0));
      use_heads := false;
      per_key := budget;
      plain_lim := budget;
    END IF;
    WITH keyed AS (
      -- One job per key: the first jobs the key step found.
      SELECT h.id, h.concurrency_key, 1::bigint AS rk, h.priority, h.queued_at
      FROM unnest(head_ids, round_keys, head_priorities, head_queued) h(id, concurrency_key, priority, queued_at)
      WHERE use_heads
      UNION ALL
      SELECT x.id, x.concurrency_key, x.rk, x.priority, x.queued_at
      FROM unnest(round_keys) g(key)
      CROSS JOIN LATERAL (
        SELECT y.*, row_number() OVER (ORDER BY y.priority DESC, y.queued_at, y.id) AS rk
        FROM (SELECT j.id, j.concurrency_key, j.priority, j.queued_at FROM jobwire.jobs j
              WHERE j.state = 'available' AND j.concurrency_key IS NOT NULL AND j.ordering_key IS NULL
                AND j.queue = q AND j.concurrency_key = g.key
              ORDER BY j.priority DESC, j.queued_at, j.id
              LIMIT per_key) y
      ) x
      WHERE NOT use_heads
    ), plain AS (
      SELECT y.id, NULL::text AS concurrency_key, row_number() OVER (ORDER BY y.priority DESC, y.queued_at, y.id) AS rk,
             y.priority, y.queued_at
      FROM (SELECT j.id, j.priority, j.queued_at FROM jobwire.jobs j
            WHERE j.state = 'available' AND j.concurrency_key IS NULL AND j.ordering_key IS NULL AND j.queue = q
            ORDER BY j.priority DESC, j.queued_at, j.id
            LIMIT plain_lim) y
    ), heads AS (
      SELECT h.id, h.concurrency_key, 1::bigint AS rk, h.priority, h.queued_at
      FROM unnest(okeys) ok(key)
      CROSS JOIN LATERAL (SELECT j.id, j.state, j.concurrency_key, j.priority, j.queued_at FROM jobwire.jobs j
                          WHERE j.ordering_key IS NOT NULL AND j.state IN ('available', 'running', 'retryable')
                            AND j.queue = q AND j.ordering_key = ok.key
                          ORDER BY j.queued_at, j.id LIMIT 1) h
      WHERE h.state = 'available' AND pass = 1
    ), ranked AS (
      SELECT a.*,
             row_number() OVER (PARTITION BY a.concurrency_key ORDER BY a.rk, a.priority DESC, a.queued_at, a.id) AS nth,
             (quotas ->> a.concurrency_key)::int - coalesce((used ->> a.concurrency_key)::int, 0) AS room
      FROM (SELECT * FROM keyed UNION ALL SELECT * FROM plain UNION ALL SELECT * FROM heads) a
      WHERE NOT a.id = ANY (taken)
    ), picked AS (
      SELECT r.id, r.concurrency_key FROM ranked r
      WHERE r.room IS NULL OR r.nth <= r.room
      ORDER BY r.rk, r.priority DESC, r.queued_at, r.id
      LIMIT budget - cardinality(taken)
    )
    SELECT coalesce((SELECT array_agg(p.id) FROM picked p), '{}'),
           coalesce((SELECT jsonb_object_agg(u.key, u.n) FROM (
              SELECT e.key, sum(e.n)::int AS n FROM (
                SELECT t.key, t.value::int AS n FROM jsonb_each_text(used) t
                UNION ALL
                SELECT p.concurrency_key, count(*)::int FROM picked p WHERE p.concurrency_key IS NOT NULL GROUP BY p.concurrency_key
              ) e GROUP BY e.key) u), '{}'),
           blocked || coalesce((SELECT array_agg(DISTINCT r.concurrency_key) FROM ranked r
                                WHERE r.room IS NOT NULL AND r.nth > r.room AND NOT r.concurrency_key = ANY (blocked)), '{}')
      INTO picked_ids, used, blocked;
    taken := taken || picked_ids;
  END LOOP;

  IF cardinality(taken) > 0 THEN
    RETURN QUERY
    WITH locked AS (
      SELECT j.ctid FROM jobwire.jobs j
      WHERE j.id = ANY (taken) AND j.state = 'available'
      ORDER BY j.id
      FOR UPDATE SKIP LOCKED
    )
    UPDATE jobwire.jobs j
    SET state = 'running', attempt = j.attempt + 1, lease_token = gen_random_uuid(),
        leased_for_ms = coalesce(j.lease_ms, worker_lease_ms, c.lease_ms, default_lease_ms),
        lease_expires_at = now() + coalesce(j.lease_ms, worker_lease_ms, c.lease_ms, default_lease_ms) * interval '1 millisecond',
        worker_id = worker, cancel_requested = false
    WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM locked))
    RETURNING j.id, j.queue, j.type, j.payload, j.content_type, j.priority, j.attempt, j.max_attempts,
              j.run_at, j.created_at, j.headers, j.idempotency_key, nullif(j.errors, '[]'), j.errors_dropped,
              j.lease_expires_at, j.lease_ms, j.lease_token, j.concurrency_key, j.ordering_key;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Rows another claimer took since they were read (only the fast path
    -- can, on plain jobs) are simply not charged to the limiters.
    IF c.rate_count IS NOT NULL THEN
      queue_tat := jobwire.rate_spend(queue_tat, c.rate_count, c.rate_period_ms, n);
      INSERT INTO jobwire.rate_buckets AS b (queue, key, tat) VALUES (q, '', queue_tat)
      ON CONFLICT (queue, key) DO UPDATE SET tat = EXCLUDED.tat;
      -- All it allowed was taken: say when the next start is allowed.
      IF n >= allowed THEN
        next_start := queue_tat - (c.rate_period_ms - c.rate_period_ms::float8 / c.rate_count) * interval '1 millisecond';
      END IF;
    END IF;
    IF c.key_rate_count IS NOT NULL AND used <> '{}' THEN
      INSERT INTO jobwire.rate_buckets AS b (queue, key, tat)
      SELECT q, u.key, jobwire.rate_spend(old.tat, c.key_rate_count, c.key_rate_period_ms, u.n::int)
      FROM jsonb_each_text(used) u(key, n)
      LEFT JOIN jobwire.rate_buckets old ON old.queue = q AND old.key = u.key
      ON CONFLICT (queue, key) DO UPDATE SET tat = EXCLUDED.tat;
    END IF;
  END IF;

  -- Keys held back by their rate limiter: the soonest one's next start.
  IF c.key_rate_count IS NOT NULL AND cardinality(blocked) > 0 THEN
    SELECT min(b.tat) - (c.key_rate_period_ms - c.key_rate_period_ms::float8 / c.key_rate_count) * interval '1 millisecond'
      INTO key_next
    FROM jobwire.rate_buckets b WHERE b.queue = q AND b.key = ANY (blocked);
    IF key_next > now() AND (next_start IS NULL OR key_next < next_start) THEN
      next_start := key_next;
    END IF;
  END IF;
  -- Nothing announces a limiter's refill (no NOTIFY comes), so the claim
  -- says when to look again, as a row with no job.
  IF next_start IS NOT NULL AND n < lim THEN
    RETURN NEXT ROW(NULL, q, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    next_start, NULL, NULL, NULL, NULL)::jobwire.claimed;
  END IF;

  -- The cursors move past the last key visited, so the next claim starts after it.
  last_okey := okeys[cardinality(okeys)];
  IF last_key IS DISTINCT FROM cur.key_cursor OR last_okey IS DISTINCT FROM cur.order_cursor THEN
    INSERT INTO jobwire.queue_cursors AS qc (queue, key_cursor, order_cursor) VALUES (q, last_key, last_okey)
    ON CONFLICT (queue) DO UPDATE SET key_cursor = EXCLUDED.key_cursor, order_cursor = EXCLUDED.order_cursor;
  END IF;
END
$$;
