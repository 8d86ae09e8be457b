-- Webhook deliveries: an explicit hand-off state, and endpoint limits kept in Postgres so every
-- dispatcher and every retry attempt, in any process, shares them (callbacks/dispatcher.py).
--
-- state: pending (an attempt is due) -> delivering (a dispatcher attempts it, under a lease)
--   -> succeeded | failed | handoff (a failed attempt is recorded; its retry workflow is to be started)
--   -> retrying (its Temporal retry workflow owns it) -> succeeded | failed.
-- A resend of a delivery on its schedule (retrying or handoff) is `resending`: a dispatcher signals
-- its workflow to attempt now. The names live in ackflow/contracts.py.
--
-- next_attempt_at is when a dispatcher may next claim the delivery: a pending one when its attempt is
-- due, a delivering one when its lease runs out (a dispatcher that died), a handoff/resending one when
-- its hand-off is due (again). lease_until is set only while an attempt is under way (by a dispatcher
-- or a retry workflow's activity): it is what an endpoint's max_concurrency counts.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_state_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_state_check
    CHECK (state IN ('pending', 'delivering', 'handoff', 'resending', 'retrying', 'succeeded', 'failed'));
-- The receiver's Retry-After of the last failed attempt, so a hand-off done again after a crash keeps it.
ALTER TABLE webhook_deliveries ADD COLUMN retry_after double precision;

-- Deliveries stranded by the old hand-off (a failed first attempt recorded with lease_until NULL,
-- then the workflow start failed): hand them off again. Leases still running become claim times.
UPDATE webhook_deliveries SET state = 'handoff', next_attempt_at = now()
 WHERE state = 'delivering' AND attempts > 0 AND lease_until IS NULL;
UPDATE webhook_deliveries SET next_attempt_at = coalesce(lease_until, now()) WHERE state = 'delivering';

-- A lane is an endpoint, or a tenant's requests' own callback URLs (endpoint_id NULL). The claim
-- visits the lanes with work by a skip scan of this index (one descent a lane, however many
-- deliveries wait in it), then takes each lane's oldest due deliveries from it.
CREATE INDEX webhook_deliveries_lane_idx ON webhook_deliveries (coalesce(endpoint_id, tenant_id), next_attempt_at)
    WHERE state IN ('pending', 'delivering');
-- Attempts under way, per lane: what max_concurrency is checked against.
CREATE INDEX webhook_deliveries_leased_idx ON webhook_deliveries (coalesce(endpoint_id, tenant_id))
    WHERE lease_until IS NOT NULL;
CREATE INDEX webhook_deliveries_handoff_idx ON webhook_deliveries (next_attempt_at)
    WHERE state IN ('handoff', 'resending');
DROP INDEX webhook_deliveries_due_idx;

-- Each endpoint's token bucket (rate_limit_per_second tokens a second, a one-second burst). Claims
-- lock it, so two dispatchers never spend the same tokens or fill the same concurrency slots.
CREATE TABLE webhook_endpoint_buckets (
    endpoint_id  uuid PRIMARY KEY REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tokens       double precision NOT NULL DEFAULT 0,
    refilled_at  timestamptz NOT NULL DEFAULT '2000-01-01'  -- long ago: a new bucket is full
);
INSERT INTO webhook_endpoint_buckets (endpoint_id) SELECT id FROM webhook_endpoints;

CREATE FUNCTION ackflow_webhook_endpoint_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_endpoint_buckets (endpoint_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhook_endpoints_bucket AFTER INSERT ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION ackflow_webhook_endpoint_bucket();

-- A resend of a delivery on its schedule wakes the dispatchers too.
CREATE TRIGGER webhook_deliveries_resend AFTER UPDATE OF state ON webhook_deliveries
    FOR EACH ROW WHEN (NEW.state = 'resending' AND OLD.state <> 'resending')
    EXECUTE FUNCTION ackflow_notify_webhooks();
