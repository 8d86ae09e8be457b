-- Idempotency keys (per the IETF Idempotency-Key draft), per-tenant accept rate limits.

CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key              text NOT NULL,
    fingerprint      bytea NOT NULL,          -- SHA-256 of method, path and body
    request_id       uuid,
    response_status  integer NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

-- NULL: the deployment's default (ACKFLOW_RATE_LIMIT_PER_SECOND).
ALTER TABLE tenants ADD COLUMN accept_rate_per_second integer CHECK (accept_rate_per_second > 0);
