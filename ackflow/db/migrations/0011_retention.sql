-- Retention (ackflow/db/retention.py): the pruner deletes finished work in small batches, oldest
-- first. Each batch must be an index range scan, however large the tables grow, so every delete
-- and every check it makes has an index here. Partial indexes hold only rows that can be pruned
-- (finished requests, finished deliveries, deleted endpoints), so they stay small and cost the
-- hot paths nothing until a row finishes.
-- A migration runs in one transaction, so these are built without CONCURRENTLY and block writes to
-- their table while they build. On a large database, build them first with
-- CREATE INDEX CONCURRENTLY and the same names: IF NOT EXISTS then skips them here.

-- Requests that ended, oldest first (completed_at is set exactly when a request ends).
CREATE INDEX IF NOT EXISTS requests_completed_idx ON requests (completed_at) WHERE completed_at IS NOT NULL;
-- "Does an outbox row still announce this request?": a request is kept until its rows are relayed.
CREATE INDEX IF NOT EXISTS outbox_request_idx ON outbox (request_id);
-- "Is a delivery of this request still unfinished?" (the predicate is repeated in prune_requests).
CREATE INDEX IF NOT EXISTS webhook_deliveries_unfinished_request_idx ON webhook_deliveries (request_id)
    WHERE state NOT IN ('succeeded', 'failed');
-- Deliveries that finished, by when (updated_at is the time of their last change).
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished_idx ON webhook_deliveries (updated_at)
    WHERE state IN ('succeeded', 'failed');
-- Endpoint events by age, and by endpoint for the cascade when a deleted endpoint is pruned.
CREATE INDEX IF NOT EXISTS webhook_endpoint_events_created_idx ON webhook_endpoint_events (created_at);
CREATE INDEX IF NOT EXISTS webhook_endpoint_events_endpoint_idx ON webhook_endpoint_events (endpoint_id);
-- Soft-deleted endpoints, by when they were deleted.
CREATE INDEX IF NOT EXISTS webhook_endpoints_deleted_idx ON webhook_endpoints (deleted_at) WHERE deleted_at IS NOT NULL;
