-- Admission control: the relay records when it started a request's workflow, so it can keep the
-- number of unfinished workflows bounded and let a burst wait in the outbox instead of in Temporal.
ALTER TABLE requests ADD COLUMN workflow_started_at timestamptz;
CREATE INDEX requests_in_flight_idx ON requests (workflow_started_at)
    WHERE workflow_started_at IS NOT NULL AND completed_at IS NULL;
