-- A lease token exists only while its job runs. Every statement that moves a
-- job out of 'running' clears lease_token; this makes it a rule the database
-- keeps, so the leased-row functions (sql/functions/heartbeat_leases.sql)
-- can find their rows by (id, token) alone. With "state = 'running'" in
-- their WHERE, the planner could read the partial index jobs_running_idx
-- (queue, concurrency_key) WHERE state = 'running' in full, every running
-- job for each call, instead of one primary-key probe per lease.
--
-- NOT VALID, then VALIDATE: the check of existing rows holds only a SHARE
-- UPDATE EXCLUSIVE lock, so enqueues and acks go on while it scans.
ALTER TABLE jobwire.jobs ADD CONSTRAINT jobs_lease_token_running CHECK (lease_token IS NULL OR state = 'running') NOT VALID;
ALTER TABLE jobwire.jobs VALIDATE CONSTRAINT jobs_lease_token_running;
