-- Expiry (issue 16): `expires_at` / `ttl_seconds` on POST /v1/requests. A request not started by then
-- ends CANCELLED with the error {"type": "Expired", ...}. Decided where a request starts: the move
-- INIT -> PROCESSING of an expired request records CANCELLED instead, in the same statement
-- (transition_request, transition_requests), so no worker, relay or retry can start it late; and
-- requests still waiting past their expiry (admission full, a worker down) are cancelled by the
-- relays' expiry sweep (expire_requests, outbox_cdc/expiry.py), which this index keeps cheap.
ALTER TABLE requests ADD COLUMN expires_at timestamptz;
CREATE INDEX requests_expiring_idx ON requests (expires_at) WHERE status = 'INIT' AND expires_at IS NOT NULL;

CREATE FUNCTION ackflow_expired_error(expires_at timestamptz) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('type', 'Expired',
                              'message', 'not started before it expired at ' || ackflow_timestamp(expires_at))
$$;

CREATE OR REPLACE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', ackflow_timestamp(r.created_at), 'updated_at', ackflow_timestamp(r.updated_at),
        'completed_at', ackflow_timestamp(r.completed_at))
        || jsonb_strip_nulls(jsonb_build_object('progress', r.progress, 'waiting', r.waiting,
                                                'scheduled_for', ackflow_timestamp(r.scheduled_for),
                                                'expires_at', ackflow_timestamp(r.expires_at)))
$$;
