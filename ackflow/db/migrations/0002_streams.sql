-- Server-side secrets shared by every gateway (for example, to sign capability URLs), made on first
-- use by whichever gateway starts first, so a fleet needs no extra configuration to agree on them.
CREATE TABLE signing_keys (
    name        text PRIMARY KEY,
    secret      bytea NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The tenant-wide event stream replays a tenant's events by id.
CREATE INDEX request_events_tenant_idx ON request_events (tenant_id, id);
