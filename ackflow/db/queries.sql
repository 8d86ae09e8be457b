-- Every SQL statement ackflow runs, by name. Loaded by ackflow.db.queries.

-- name: accept_request
-- The whole accept path in one statement: the request, its first event and its outbox row,
-- only if a worker has registered the kind (no row back means an unknown kind).
WITH handler AS (
    SELECT task_queue, options FROM handler_kinds WHERE kind = $3
), request AS (
    INSERT INTO requests (id, tenant_id, kind, status, version, payload, callback_url, callback_events)
    SELECT $1, $2, $3, 'INIT', 1, $4::jsonb, $5, $6 FROM handler
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.accepted', r.status, r.version, ackflow_request_state(r) FROM request r
    RETURNING id
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT 'request.accepted', r.tenant_id, r.id, e.id,
           jsonb_build_object('kind', r.kind, 'task_queue', h.task_queue, 'handler', h.options)
    FROM request r, event e, handler h
)
SELECT id, kind, status, version, created_at FROM request;

-- name: transition_request
-- One status change = one statement: requests + request_events + outbox. Only moves forward:
-- the row changes only if its status is one of $3. No row back means it was not in such a status.
-- A move to PROCESSING also returns the payload, which the handler runs on next (one read fewer).
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
SELECT c.id, c.status, c.version, e.id AS event_id, CASE WHEN $2 = 'PROCESSING' THEN c.payload END AS payload
  FROM changed c, event e;

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
-- $3: kind -> its options (an object).
INSERT INTO handler_kinds (kind, task_queue, options)
SELECT kind, $2, $3::jsonb -> kind FROM unnest($1::text[]) AS kind
ON CONFLICT (kind) DO UPDATE
   SET task_queue = EXCLUDED.task_queue, options = EXCLUDED.options, registered_at = now();

-- name: claim_outbox
-- One batch of due rows, oldest first, locked for this relay: up to $1 rows of every topic but
-- request.accepted, then request.accepted rows only as far as $2 (the most request workflows started
-- and not finished) leaves room; $2 NULL: no limit. The topic is a literal so that the partial
-- indexes of migration 0008 serve both halves.
WITH others AS (
    SELECT id, topic, tenant_id, request_id, event_id, payload, attempts
      FROM outbox
     WHERE topic <> 'request.accepted' AND available_at <= now()
     ORDER BY id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), in_flight AS (
    SELECT count(*) AS n FROM requests WHERE workflow_started_at IS NOT NULL AND completed_at IS NULL
), admitted AS (
    SELECT id, topic, tenant_id, request_id, event_id, payload, attempts
      FROM outbox
     WHERE topic = 'request.accepted' AND available_at <= now()
     ORDER BY id
     LIMIT greatest(0, least($1 - (SELECT count(*) FROM others), $2::bigint - (SELECT n FROM in_flight)))
       FOR UPDATE SKIP LOCKED
)
SELECT * FROM others
UNION ALL
SELECT * FROM admitted;

-- name: finish_outbox
-- Rows $1 were dispatched: delete them; requests $2 had their workflows started just now.
WITH dispatched AS (
    DELETE FROM outbox WHERE id = ANY($1::bigint[])
)
UPDATE requests SET workflow_started_at = coalesce(workflow_started_at, now()) WHERE id = ANY($2::uuid[]);

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

-- name: fan_out_webhooks
-- One delivery per matching endpoint of the tenant (and one for the request's own callback_url),
-- idempotent: a re-sent outbox row finds them already there. $5 is the exact body to send.
WITH targets AS (
    SELECT e.id AS endpoint_id, e.url
      FROM webhook_endpoints e
     WHERE e.tenant_id = $3::uuid AND e.deleted_at IS NULL AND e.enabled
       AND ($2::text = ANY (e.event_types) OR split_part($2::text, '.', 1) || '.*' = ANY (e.event_types))
    UNION ALL
    SELECT NULL, r.callback_url
      FROM requests r
     WHERE r.id = $4 AND r.callback_url IS NOT NULL
       AND (r.callback_events IS NULL OR $2 = ANY (r.callback_events)
            OR split_part($2, '.', 1) || '.*' = ANY (r.callback_events))
)
-- Ids are time-ordered (UUIDv7 layout, built by hand for Postgres < 18) like every other id, so an
-- endpoint's delivery log, ordered by id, is newest first.
INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, request_id, event_id, message_id, event_type, url, body, state)
SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                      PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                      FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
       $3::uuid, t.endpoint_id, $4::uuid, $1::bigint, 'msg_' || $1::bigint, $2::text, t.url, $5::text, 'pending'
  FROM targets t
ON CONFLICT DO NOTHING;

-- name: claim_webhook_deliveries
-- Due deliveries (and ones whose dispatcher died mid-attempt: lease expired), under a lease, with
-- all an attempt needs (the columns of delivery_for_attempt), so a first attempt reads nothing more.
WITH claimed AS (
    UPDATE webhook_deliveries d
       SET state = 'delivering', lease_until = now() + make_interval(secs => $2), updated_at = now()
     WHERE d.id IN (
            SELECT id FROM webhook_deliveries
             WHERE (state = 'pending' AND next_attempt_at <= now())
                OR (state = 'delivering' AND lease_until < now())
             ORDER BY next_attempt_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED)
    RETURNING d.*
)
SELECT d.id, d.tenant_id, d.endpoint_id, d.message_id, coalesce(e.url, d.url) AS url, d.body, d.state, d.attempts,
       d.single_attempt, e.enabled AS endpoint_enabled, e.deleted_at AS endpoint_deleted_at,
       ARRAY(SELECT secret FROM webhook_secrets s
              WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.id DESC) AS secrets
  FROM claimed d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id;

-- name: extend_webhook_leases
-- The dispatcher attempting these deliveries is alive: keep the others off them.
UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => $2)
 WHERE id = ANY ($1::uuid[]) AND state = 'delivering';

-- name: delivery_for_attempt
-- The endpoint's current url: a resend after the partner fixed its url goes to the fixed one. The
-- endpoint's active signing secrets, newest first (none for a callback_url: the tenant's secret signs).
SELECT d.id, d.tenant_id, d.endpoint_id, d.message_id, coalesce(e.url, d.url) AS url, d.body, d.state, d.attempts,
       d.single_attempt, e.enabled AS endpoint_enabled, e.deleted_at AS endpoint_deleted_at,
       ARRAY(SELECT secret FROM webhook_secrets s
              WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.id DESC) AS secrets
  FROM webhook_deliveries d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
 WHERE d.id = $1;

-- name: tenant_signing_secret
-- The tenant's default signing secret, made from $2 on first use. When first uses race, the losers'
-- UPDATEs wait for the winner and then keep and return its secret (coalesce reads the row as the
-- winner left it; this statement's snapshot still shows NULL, so it must not be read from there).
WITH current AS (
    SELECT webhook_secret FROM tenants WHERE id = $1
), made AS (
    UPDATE tenants SET webhook_secret = coalesce(webhook_secret, $2)
     WHERE id = $1 AND (SELECT webhook_secret FROM current) IS NULL
    RETURNING webhook_secret
)
SELECT webhook_secret FROM made
UNION ALL
SELECT webhook_secret FROM current WHERE webhook_secret IS NOT NULL
LIMIT 1;

-- name: endpoint_limits
SELECT id, max_concurrency, rate_limit_per_second FROM webhook_endpoints WHERE id = ANY ($1::uuid[]);

-- name: record_attempt
-- The attempt, and the delivery's new state ($4) and the url it went to ($10), in one statement.
WITH attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body, error)
    VALUES ($1, $2, $3, coalesce($9, now()), $5, $6, $7, $8)
)
UPDATE webhook_deliveries
   SET state = $4, attempts = $2, last_status = $5, last_error = $8, url = $10, lease_until = NULL, updated_at = now()
 WHERE id = $1;

-- name: record_successes
-- Succeeded attempts of many deliveries in one statement (one array element per delivery): each
-- attempt, its delivery now succeeded, and its endpoint healthy again.
WITH done AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::int[], $7::text[],
                         $8::text[])
        AS t (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body, url)
), attempts AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body)
    SELECT delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body FROM done
), healthy AS (
    UPDATE webhook_endpoints SET failing_since = NULL
     WHERE id = ANY ($9::uuid[]) AND failing_since IS NOT NULL
)
UPDATE webhook_deliveries d
   SET state = 'succeeded', attempts = done.attempt, last_status = done.status_code, last_error = NULL,
       url = done.url, lease_until = NULL, updated_at = now()
  FROM done
 WHERE d.id = done.delivery_id;

-- name: endpoint_failed
-- Remember when the endpoint started failing ($2 is the attempt time); returns since when it fails.
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2) WHERE id = $1 RETURNING failing_since;

-- name: disable_endpoint
WITH disabled AS (
    UPDATE webhook_endpoints
       SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
     WHERE id = $1 AND enabled
    RETURNING id, tenant_id
)
INSERT INTO webhook_endpoint_events (endpoint_id, tenant_id, type, data)
SELECT id, tenant_id, 'webhook.endpoint_disabled', jsonb_build_object('reason', $2) FROM disabled;

-- name: fail_delivery_without_attempt
UPDATE webhook_deliveries SET state = 'failed', last_error = $2, lease_until = NULL, updated_at = now() WHERE id = $1;

-- name: mark_delivery_retrying
UPDATE webhook_deliveries SET state = 'retrying', lease_until = NULL, updated_at = now()
 WHERE id = $1 AND state = 'delivering';

-- name: create_endpoint
WITH endpoint AS (
    INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, max_concurrency, rate_limit_per_second)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING *
), secret AS (
    INSERT INTO webhook_secrets (endpoint_id, secret) SELECT id, $8 FROM endpoint
)
SELECT * FROM endpoint;

-- name: get_endpoint
SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL;

-- name: list_endpoints
SELECT * FROM webhook_endpoints
 WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2)
 ORDER BY id
 LIMIT $3;

-- name: update_endpoint
-- NULL leaves a field as it is; re-enabling clears the reason it was disabled and its failure streak.
UPDATE webhook_endpoints
   SET url = coalesce($3, url),
       description = coalesce($4, description),
       event_types = coalesce($5, event_types),
       max_concurrency = coalesce($6, max_concurrency),
       rate_limit_per_second = CASE WHEN $8 THEN $7 ELSE rate_limit_per_second END,
       enabled = coalesce($9, enabled),
       disabled_reason = CASE WHEN $9 THEN NULL ELSE disabled_reason END,
       disabled_at = CASE WHEN $9 THEN NULL ELSE disabled_at END,
       failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END,
       updated_at = now()
 WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: delete_endpoint
UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, updated_at = now()
 WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
RETURNING id;

-- name: rotate_endpoint_secret
-- The current secret keeps signing for $4 seconds beside the new one.
WITH endpoint AS (
    SELECT id FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
), retired AS (
    UPDATE webhook_secrets s SET expires_at = now() + make_interval(secs => $4)
      FROM endpoint
     WHERE s.endpoint_id = endpoint.id AND (s.expires_at IS NULL OR s.expires_at > now() + make_interval(secs => $4))
)
INSERT INTO webhook_secrets (endpoint_id, secret) SELECT id, $3 FROM endpoint RETURNING endpoint_id;

-- name: create_test_delivery
INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, url, body, state, single_attempt)
SELECT $1, tenant_id, id, $3, 'webhook.test', url, $4, 'pending', true
  FROM webhook_endpoints WHERE id = $2 AND tenant_id = $5 AND deleted_at IS NULL
RETURNING id;

-- name: list_deliveries
SELECT id, endpoint_id, request_id, event_id, message_id, event_type, url, state, attempts, last_status, last_error,
       created_at, updated_at
  FROM webhook_deliveries
 WHERE endpoint_id = $1 AND tenant_id = $2 AND ($3::text IS NULL OR state = $3) AND ($4::uuid IS NULL OR id < $4)
 ORDER BY id DESC
 LIMIT $5;

-- name: get_delivery
SELECT id, endpoint_id, request_id, event_id, message_id, event_type, url, state, attempts, last_status, last_error,
       created_at, updated_at
  FROM webhook_deliveries WHERE id = $1 AND tenant_id = $2;

-- name: delivery_attempts
SELECT attempt, trigger, attempted_at, status_code, latency_ms, response_body, error
  FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id;

-- name: requeue_delivery
-- A resend: back to pending for one attempt now. A delivery still on its retry schedule keeps it.
UPDATE webhook_deliveries
   SET state = 'pending', next_attempt_at = now(), single_attempt = (state <> 'retrying'), updated_at = now()
 WHERE id = $1 AND tenant_id = $2 AND state IN ('succeeded', 'failed', 'retrying')
RETURNING id;

-- name: requeue_failed_since
UPDATE webhook_deliveries
   SET state = 'pending', next_attempt_at = now(), single_attempt = true, updated_at = now()
 WHERE endpoint_id = $1 AND tenant_id = $2 AND state = 'failed' AND created_at >= $3;

-- name: idempotent_response
SELECT fingerprint, response_status, response_body
  FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND expires_at > now();

-- name: remember_idempotent_response
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, request_id, response_status, response_body, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
ON CONFLICT (tenant_id, key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, request_id = EXCLUDED.request_id,
       response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body,
       created_at = now(), expires_at = EXCLUDED.expires_at;

-- name: forget_expired_idempotency_keys
DELETE FROM idempotency_keys WHERE expires_at < now();

-- name: tenant_accept_rate
SELECT accept_rate_per_second FROM tenants WHERE id = $1;

-- name: set_tenant_accept_rate
UPDATE tenants SET accept_rate_per_second = $2 WHERE name = $1 RETURNING id;

-- name: list_api_keys
SELECT k.prefix, k.created_at, k.revoked_at
  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
 WHERE t.name = $1
 ORDER BY k.created_at;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL RETURNING key_hash;
