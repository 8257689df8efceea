-- After every statement that inserts jobs (gRPC, cron, the SQL enqueue()):
--   * wakes idle brokers when jobs became available, with one NOTIFY per
--     queue however many rows the statement inserted; Postgres folds
--     identical notifications within a transaction into one, delivered at
--     commit, so a job enqueued inside a transaction wakes nobody until it
--     commits;
--   * counts the jobs per queue (migrations/008_operators.sql): one delta
--     row per queue per statement, so an Enqueue of 1000 jobs adds one row.
-- The trigger is jobs_notify_inserted (migration 001).
CREATE OR REPLACE FUNCTION jobwire.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('jobwire', CASE WHEN n.state = 'available' THEN 'a:' || n.queue ELSE 's:' END)
  FROM (SELECT DISTINCT queue, state FROM new_jobs) n;
  INSERT INTO jobwire.counter_deltas (queue, kind, n)
  SELECT queue, 'enqueued', count(*) FROM new_jobs GROUP BY queue;
  RETURN NULL;
END
$$;
