-- Partner webhooks: endpoints, their signing secrets, deliveries (one per event and endpoint) and attempts.

-- The tenant's default signing secret, for requests that carry their own callback_url.
ALTER TABLE tenants ADD COLUMN webhook_secret text;
ALTER TABLE requests ADD COLUMN callback_url text, ADD COLUMN callback_events text[];

CREATE TABLE webhook_endpoints (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                   text NOT NULL,
    description           text NOT NULL DEFAULT '',
    event_types           text[] NOT NULL,
    enabled               boolean NOT NULL DEFAULT true,
    disabled_reason       text,
    disabled_at           timestamptz,
    failing_since         timestamptz,          -- first failure since the last success
    max_concurrency       integer NOT NULL DEFAULT 10 CHECK (max_concurrency BETWEEN 1 AND 1000),
    rate_limit_per_second integer CHECK (rate_limit_per_second BETWEEN 1 AND 10000),  -- NULL: no limit
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, id) WHERE deleted_at IS NULL;

-- Several secrets may sign at once: after a rotation the old one keeps signing until it expires.
CREATE TABLE webhook_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
CREATE INDEX webhook_secrets_endpoint_idx ON webhook_secrets (endpoint_id);

-- state: pending (waiting for a dispatcher) -> delivering (claimed, under a lease) -> succeeded, or
-- retrying (owned by its Temporal retry workflow) -> succeeded | failed.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id      uuid REFERENCES webhook_endpoints (id) ON DELETE CASCADE,  -- NULL: a request's callback_url
    request_id       uuid,
    event_id         bigint,
    message_id       text NOT NULL,            -- the webhook-id header: stable across attempts
    event_type       text NOT NULL,
    url              text NOT NULL,
    body             text NOT NULL,            -- exactly what is sent, so an id never carries another body
    state            text NOT NULL CHECK (state IN ('pending', 'delivering', 'retrying', 'succeeded', 'failed')),
    single_attempt   boolean NOT NULL DEFAULT false,  -- manual resend or test: no retry schedule
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One delivery per event and endpoint (or per event for a callback_url), whoever fans out first.
CREATE UNIQUE INDEX webhook_deliveries_event_idx
    ON webhook_deliveries (event_id, coalesce(endpoint_id, '00000000-0000-0000-0000-000000000000'))
    WHERE event_id IS NOT NULL;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id    uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    trigger        text NOT NULL,              -- first | retry | manual
    attempted_at   timestamptz NOT NULL DEFAULT now(),
    status_code    integer,
    latency_ms     integer NOT NULL,
    response_body  text,                       -- the first 1 KiB
    error          text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- What happened to an endpoint (webhook.endpoint_disabled, ...), for operators and the tenant.
CREATE TABLE webhook_endpoint_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ackflow_notify_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ackflow_webhooks', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION ackflow_notify_webhooks();
-- A resend puts a finished delivery back to pending: wake the dispatchers for that too.
CREATE TRIGGER webhook_deliveries_requeued AFTER UPDATE OF state ON webhook_deliveries
    FOR EACH ROW WHEN (NEW.state = 'pending' AND OLD.state <> 'pending')
    EXECUTE FUNCTION ackflow_notify_webhooks();
