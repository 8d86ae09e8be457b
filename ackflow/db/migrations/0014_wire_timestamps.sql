-- One timestamp format on every channel. GET answers write times as msgspec encodes them
-- (ackflow.timestamps.wire_timestamp): RFC 3339 in UTC with a `Z`, microseconds when there are any,
-- `2026-12-02T02:09:06.250018Z`. Status events' `data` (SSE, WebSocket, the tenant stream, webhooks)
-- is built here, where a timestamptz turned into JSON read `2026-12-02T02:09:06.250018+00:00`,
-- and in the session's time zone at that. Now it is written in the same form as GET's.
-- Events recorded before this migration keep the form they were recorded in (a webhook's body never
-- changes under its webhook-id); retention prunes them with their requests.
CREATE FUNCTION ackflow_timestamp(t timestamptz) RETURNS text LANGUAGE sql STABLE STRICT AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN date_trunc('second', t) = t THEN '' ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
           || 'Z'
$$;

CREATE OR REPLACE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', ackflow_timestamp(r.created_at), 'updated_at', ackflow_timestamp(r.updated_at),
        'completed_at', ackflow_timestamp(r.completed_at))
$$;
