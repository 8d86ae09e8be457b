-- Stage health (ackflow/db/stage_health.py, read when metrics are scraped and by `ackflow status`)
-- counts failed webhook deliveries: a partial index holds only those, so the count never reads the
-- succeeded ones, which are most rows. (Built without CONCURRENTLY, like 0011: on a large database
-- build it first with CREATE INDEX CONCURRENTLY and the same name.)
CREATE INDEX IF NOT EXISTS webhook_deliveries_failed_idx ON webhook_deliveries (tenant_id) WHERE state = 'failed';
