-- Progress and waits (issue 15). A handler (or a step of a workflow kind) reports progress: the latest
-- report is kept on the request, and each report is a `request.progress` event with the request's next
-- version, carried by every channel as a status change is. A workflow kind that waits for outside input
-- marks the request `waiting` (its status stays PROCESSING: status only moves forward) with a
-- `request.waiting` event; the input, once accepted, is kept in request_inputs and relayed to the
-- workflow through the outbox (topic request.input), so the gateway never calls Temporal.
ALTER TABLE requests ADD COLUMN progress jsonb, ADD COLUMN waiting jsonb;

CREATE TABLE request_inputs (
    request_id  uuid        NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    value       jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, name)
);

-- The state every event carries and GET answers: as in migration 0014, plus progress and waiting
-- when the request has them (left out otherwise, so events of plain kinds stay as they were).
CREATE OR REPLACE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', ackflow_timestamp(r.created_at), 'updated_at', ackflow_timestamp(r.updated_at),
        'completed_at', ackflow_timestamp(r.completed_at))
        || jsonb_strip_nulls(jsonb_build_object('progress', r.progress, 'waiting', r.waiting))
$$;
