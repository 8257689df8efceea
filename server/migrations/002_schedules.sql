-- Recurring schedules (AdminService.SetSchedule). The cron loop enqueues a
-- job from `template` at each fire time, with the idempotency key
-- "cron:<name>:<fire time>", so replicas never enqueue one fire twice.
CREATE TABLE jobwire.schedules (
  name          text PRIMARY KEY,
  cron          text NOT NULL,
  -- The job to enqueue: {"queue", "type", "payload" (base64), "content_type",
  -- "priority", "max_attempts", "lease_ms", "retry", "headers"}.
  template      jsonb NOT NULL,
  paused        boolean NOT NULL DEFAULT false,
  next_run_at   timestamptz,
  last_run_at   timestamptz,
  last_job_id   bigint,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due_idx ON jobwire.schedules (next_run_at) WHERE NOT paused;
