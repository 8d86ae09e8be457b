-- ackflow's initial schema: tenants and keys, handler kinds, requests, their events, the outbox.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 of the whole key; the prefix is shown to operators to tell keys apart.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Each worker registers the kinds it can handle at start-up, so the gateway refuses unknown kinds at once.
CREATE TABLE handler_kinds (
    kind           text PRIMARY KEY,
    task_queue     text NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE requests (
    id                   uuid PRIMARY KEY,           -- UUIDv7: time-ordered, so id order is creation order
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind                 text NOT NULL,
    status               text NOT NULL CHECK (status IN ('INIT', 'PROCESSING', 'DONE', 'FAILED', 'CANCELLED')),
    version              integer NOT NULL DEFAULT 1,
    payload              jsonb NOT NULL,
    result               jsonb,
    error                jsonb,
    cancel_requested_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz
);
CREATE INDEX requests_tenant_id_idx ON requests (tenant_id, id DESC);
CREATE INDEX requests_tenant_status_idx ON requests (tenant_id, status, id DESC);

-- The per-request history. Its ids are the SSE event ids, so they only grow.
CREATE TABLE request_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL,
    topic       text NOT NULL,
    status      text NOT NULL,
    version     integer NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, version)
);

-- The transactional outbox: written in the same transaction as the change it announces,
-- removed by the relay only after the event was dispatched.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    tenant_id     uuid NOT NULL,
    request_id    uuid NOT NULL,
    event_id      bigint,
    payload       jsonb NOT NULL DEFAULT '{}',
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    available_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_available_idx ON outbox (available_at, id);

-- One notification per statement, not per row: relays only need to know there is work.
CREATE FUNCTION ackflow_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ackflow_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ackflow_notify_outbox();

-- The request's public state, as status events and webhooks carry it (the payload stays out: it can be large).
CREATE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', r.created_at, 'updated_at', r.updated_at, 'completed_at', r.completed_at)
$$;
