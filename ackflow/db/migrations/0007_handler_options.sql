-- Each kind's scheduling options (timeouts, retries, heartbeat), registered by the workers that
-- run it. The accept path copies them into the request's outbox row, so the relay starts the
-- workflow with them and the workflow schedules the handler at once, without first asking a worker
-- (a local activity per request, measured as the largest avoidable cost per request).
-- '{}' means "not registered yet": such requests learn their options from a worker, as before.
ALTER TABLE handler_kinds ADD COLUMN options jsonb NOT NULL DEFAULT '{}'::jsonb;
