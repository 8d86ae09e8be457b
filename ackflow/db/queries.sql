-- Every SQL statement ackflow runs, by name. Loaded by ackflow.db.queries.

-- name: accept_request
-- The whole accept path in one statement: the request, its first event and its outbox row,
-- only if a worker has registered the kind (no row back means an unknown kind).
WITH handler AS (
    SELECT task_queue FROM handler_kinds WHERE kind = $3
), request AS (
    INSERT INTO requests (id, tenant_id, kind, status, version, payload)
    SELECT $1, $2, $3, 'INIT', 1, $4::jsonb FROM handler
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.accepted', r.status, r.version, ackflow_request_state(r) FROM request r
    RETURNING id
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT 'request.accepted', r.tenant_id, r.id, e.id,
           jsonb_build_object('kind', r.kind, 'task_queue', h.task_queue)
    FROM request r, event e, handler h
)
SELECT id, kind, status, version, created_at FROM request;

-- name: transition_request
-- One status change = one statement: requests + request_events + outbox. Only moves forward:
-- the row changes only if its status is one of $3. No row back means it was not in such a status.
WITH changed AS (
    UPDATE requests
       SET status = $2, version = version + 1, updated_at = now(),
           result = COALESCE($4::jsonb, result), error = COALESCE($5::jsonb, error),
           completed_at = CASE WHEN $2 IN ('DONE', 'FAILED', 'CANCELLED') THEN now() END
     WHERE id = $1 AND status = ANY($3::text[])
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, $6, r.status, r.version, ackflow_request_state(r) FROM changed r
    RETURNING id, request_id, tenant_id, topic, data
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT topic, tenant_id, request_id, id, data FROM event
)
SELECT c.id, c.status, c.version, e.id AS event_id FROM changed c, event e;

-- name: get_request
SELECT id, kind, status, version, payload, result, error, created_at, updated_at, completed_at
  FROM requests WHERE id = $1 AND tenant_id = $2;

-- name: get_request_status
SELECT status, cancel_requested_at FROM requests WHERE id = $1;

-- name: lock_request
SELECT id, status, tenant_id FROM requests WHERE id = $1 AND tenant_id = $2 FOR UPDATE;

-- name: mark_cancel_requested
WITH marked AS (
    UPDATE requests SET cancel_requested_at = now() WHERE id = $1 AND cancel_requested_at IS NULL
    RETURNING id, tenant_id
)
INSERT INTO outbox (topic, tenant_id, request_id) SELECT 'request.cancel_requested', tenant_id, id FROM marked;

-- name: list_requests
-- Keyset pagination, newest first: $3 is the last id of the previous page (UUIDv7 ids sort by time).
SELECT id, kind, status, version, payload, result, error, created_at, updated_at, completed_at
  FROM requests
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR status = $2)
   AND ($4::text IS NULL OR kind = $4)
   AND ($3::uuid IS NULL OR id < $3)
 ORDER BY id DESC
 LIMIT $5;

-- name: tenant_for_key
SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: create_tenant
INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id;

-- name: tenant_by_name
SELECT id FROM tenants WHERE name = $1;

-- name: create_api_key
INSERT INTO api_keys (id, tenant_id, prefix, key_hash) VALUES ($1, $2, $3, $4);

-- name: register_handler_kinds
INSERT INTO handler_kinds (kind, task_queue)
SELECT unnest($1::text[]), $2
ON CONFLICT (kind) DO UPDATE SET task_queue = EXCLUDED.task_queue, registered_at = now();

-- name: claim_outbox
SELECT id, topic, tenant_id, request_id, event_id, payload, attempts
  FROM outbox
 WHERE available_at <= now()
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED;

-- name: delete_outbox
DELETE FROM outbox WHERE id = ANY($1::bigint[]);

-- name: postpone_outbox
UPDATE outbox
   SET attempts = attempts + 1, last_error = $2, available_at = now() + make_interval(secs => $3)
 WHERE id = $1;

-- name: ensure_signing_key
-- The named secret, made from $2 by the first caller; everyone after gets the same one.
WITH made AS (
    INSERT INTO signing_keys (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING secret
)
SELECT secret FROM made UNION ALL SELECT secret FROM signing_keys WHERE name = $1 LIMIT 1;

-- name: request_stream_position
-- Where a stream of one request starts: its status and version now, and the version of the event
-- the client saw last ($3 = Last-Event-ID, 0 for none). No row: no such request for this tenant.
SELECT r.status, r.version,
       (SELECT coalesce(max(e.version), 0) FROM request_events e WHERE e.request_id = r.id AND e.id <= $3)
           AS seen_version
  FROM requests r
 WHERE r.id = $1 AND r.tenant_id = $2;

-- name: request_events_after_version
SELECT id, topic, status, version, request_id, data
  FROM request_events
 WHERE request_id = $1 AND tenant_id = $2 AND version > $3
 ORDER BY version;

-- name: tenant_events_after
SELECT id, topic, status, version, request_id, data
  FROM request_events
 WHERE tenant_id = $1 AND id > $2
   AND ($3::text IS NULL OR data ->> 'kind' = $3)
   AND ($4::text IS NULL OR status = $4)
 ORDER BY id
 LIMIT $5;

-- name: latest_tenant_event_id
SELECT coalesce(max(id), 0) FROM request_events WHERE tenant_id = $1;
