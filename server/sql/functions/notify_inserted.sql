-- Wakes idle brokers when jobs become available. One statement-level
-- trigger (jobs_notify_inserted, created in migration 001), so a 1000-row
-- insert sends one NOTIFY per queue, and Postgres folds identical
-- notifications within a transaction into one, delivered at commit: a job
-- enqueued inside a transaction wakes nobody until it commits.
CREATE OR REPLACE FUNCTION jobwire.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('jobwire', CASE WHEN n.state = 'available' THEN 'a:' || n.queue ELSE 's:' END)
  FROM (SELECT DISTINCT queue, state FROM new_jobs) n;
  RETURN NULL;
END
$$;
