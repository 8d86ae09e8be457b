-- Every SQL statement ackflow runs, by name. Loaded by ackflow.db.queries.

-- name: accept_request
-- The whole accept path in one statement: the request, its first event and its outbox row,
-- only if a worker has registered the kind (no row back means an unknown kind). $7: the POST's
-- W3C traceparent (NULL when not tracing), the parent of every span of the request (ackflow/tracing.py).
-- A delayed start (migration 0018): $8 a time to start at, or $9 seconds from now (both NULL: at
-- once); the outbox row is not due before it, so no relay admits the request earlier. Expiry
-- (migration 0019): $10 a time, or $11 seconds from now, by which it must have started.
-- Concurrency keys, priority and tags (migration 0020): $12 the key, $13 its limit (NULL: the kind's,
-- else 1), $14 the policy when the key is full (under 'skip' nothing is inserted: the row back has
-- a NULL id), $15 the priority (NULL: 3), $16 seconds of waiting one priority level is worth, $17 tags.
-- $18: the submitted batch it came in (migration 0021), or NULL.
-- A request that finds its key full waits for it: its outbox row is not due until a holder ends.
-- Under cancel_running / replace_queued a request.supersede row has the relay cancel what it replaces.
WITH handler AS (
    SELECT task_queue, options, coalesce($13::integer, (options ->> 'concurrency_limit')::integer, 1) AS key_limit
      FROM handler_kinds WHERE kind = $3
), slot AS (
    INSERT INTO concurrency_slots AS s (tenant_id, key, taken)
    SELECT $2, $12, 1 FROM handler WHERE $12::text IS NOT NULL
    ON CONFLICT (tenant_id, key) DO UPDATE SET taken = s.taken + 1 WHERE s.taken < (SELECT key_limit FROM handler)
    RETURNING taken
), request AS (
    INSERT INTO requests (id, tenant_id, kind, status, version, payload, callback_url, callback_events, trace_context,
                          scheduled_for, expires_at, concurrency_key, concurrency_limit, key_slot, priority,
                          priority_lead, tags, submitted_batch_id)
    SELECT $1, $2, $3, 'INIT', 1, $4::jsonb, $5, $6, $7, coalesce($8::timestamptz, now() + make_interval(secs => $9)),
           coalesce($10::timestamptz, now() + make_interval(secs => $11)),
           $12, CASE WHEN $12::text IS NOT NULL THEN h.key_limit END,
           CASE WHEN $12::text IS NOT NULL THEN EXISTS (SELECT FROM slot) END,
           $15::smallint, make_interval(secs => (5 - coalesce($15::smallint, 3)) * $16::float8), $17, $18
      FROM handler h
     WHERE $12::text IS NULL OR $14::text <> 'skip' OR EXISTS (SELECT FROM slot)
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.accepted', r.status, r.version, ackflow_request_state(r) FROM request r
    RETURNING id
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload, available_at, admit_rank)
    SELECT 'request.accepted', r.tenant_id, r.id, e.id,
           jsonb_build_object('kind', r.kind, 'task_queue', h.task_queue, 'handler', h.options,
                              'due_at', ackflow_timestamp(greatest(r.created_at, r.scheduled_for))),
           CASE WHEN r.key_slot = false THEN 'infinity' ELSE greatest(now(), r.scheduled_for) END,
           CASE WHEN r.key_slot = false THEN 'infinity' ELSE greatest(now(), r.scheduled_for) - r.priority_lead END
    FROM request r, event e, handler h
), supersede_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, payload)
    SELECT 'request.supersede', r.tenant_id, r.id, jsonb_build_object('policy', $14::text, 'concurrency_key', r.concurrency_key)
      FROM request r
     WHERE r.concurrency_key IS NOT NULL AND $14::text IN ('cancel_running', 'replace_queued')
)
SELECT r.id, r.kind, r.status, r.version, r.created_at, r.scheduled_for, r.expires_at, ackflow_waiting_for(r) AS waiting_for
  FROM handler LEFT JOIN request r ON true;

-- name: create_submitted_batch
INSERT INTO submitted_batches (id, tenant_id, size, accepted) VALUES ($1, $2, $3, $4);

-- name: submitted_batch
-- Batch $1 of tenant $2, with its requests counted by status (a request pruned since is not counted).
SELECT b.id, b.size, b.accepted, b.created_at,
       coalesce((SELECT jsonb_object_agg(c.status, c.n)
                   FROM (SELECT status, count(*) AS n FROM requests
                          WHERE submitted_batch_id = b.id GROUP BY status) c), '{}') AS counts
  FROM submitted_batches b WHERE b.id = $1 AND b.tenant_id = $2;

-- name: tenant_waiting_requests
-- How many of tenant $1's requests are still INIT, counted up to $2 at most (gateway/queue_depth.py).
SELECT count(*) FROM (SELECT 1 FROM requests WHERE tenant_id = $1 AND status = 'INIT' LIMIT $2) waiting;

-- name: lock_batch_keys
-- Keys $2 (sorted) of tenant $1, locked for a batch's transaction in that order before its items take
-- their slots: two batches sharing keys then take turns instead of locking slot rows in each other's
-- order (a deadlock). Single accepts lock one key only, so they need not take part.
SELECT count(pg_advisory_xact_lock(hashtextextended($1::uuid::text || '/' || k, 7411726565)))
  FROM (SELECT k FROM unnest($2::text[]) AS k ORDER BY k) sorted;

-- name: key_holders
-- The requests holding concurrency key $2 of tenant $1 (what a request under 'skip' was refused for).
SELECT id FROM requests
 WHERE tenant_id = $1 AND concurrency_key = $2 AND key_slot AND completed_at IS NULL ORDER BY id LIMIT 10;

-- name: superseded_requests
-- The requests of key $2 (tenant $1) before request $3 that a request.supersede row of policy $4 cancels:
-- under cancel_running every one not ended, under replace_queued those still waiting for the key.
-- Those waiting first: cancelling a holder passes its slot on, and it must not go to one of them.
SELECT id FROM requests
 WHERE tenant_id = $1 AND concurrency_key = $2 AND id < $3
   AND ((status = 'INIT' AND NOT key_slot) OR ($4::text = 'cancel_running' AND key_slot AND completed_at IS NULL))
 ORDER BY key_slot, id;

-- name: lock_superseded
-- Request $1 locked, if a request.supersede row of policy $2 still cancels it (see superseded_requests):
-- its status then, or no row.
SELECT status FROM requests
 WHERE id = $1 AND ((status = 'INIT' AND NOT key_slot) OR ($2::text = 'cancel_running' AND key_slot AND completed_at IS NULL))
   FOR UPDATE;

-- name: transition_request
-- One status change = one statement: requests + request_events + outbox. Only moves forward:
-- the row changes only if its status is one of $3. No row back means it was not in such a status.
-- A move to PROCESSING also returns the payload, which the handler runs on next (one read fewer),
-- and the request's trace context, the parent of the handler's span. A move to PROCESSING of a
-- request past its expires_at records CANCELLED (Expired) instead (migration 0019).
WITH changed AS (
    UPDATE requests
       SET status = CASE WHEN $2 = 'PROCESSING' AND expires_at <= now() THEN 'CANCELLED' ELSE $2 END,
           version = version + 1, updated_at = now(), result = COALESCE($4::jsonb, result),
           error = CASE WHEN $2 = 'PROCESSING' AND expires_at <= now() THEN ackflow_expired_error(expires_at)
                        ELSE COALESCE($5::jsonb, error) END,
           completed_at = CASE WHEN $2 IN ('DONE', 'FAILED', 'CANCELLED') OR ($2 = 'PROCESSING' AND expires_at <= now())
                               THEN now() END,
           waiting = CASE WHEN $2 IN ('DONE', 'FAILED', 'CANCELLED') THEN NULL ELSE waiting END
     WHERE id = $1 AND status = ANY($3::text[])
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, CASE WHEN r.status = $2 THEN $6 ELSE 'request.' || lower(r.status) END,
           r.status, r.version, ackflow_request_state(r)
      FROM changed r
    RETURNING id, request_id, tenant_id, topic, data
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT topic, tenant_id, request_id, id, data FROM event
)
SELECT c.id, c.status, c.version, e.id AS event_id, CASE WHEN $2 = 'PROCESSING' THEN c.payload END AS payload,
       c.tenant_id, CASE WHEN $2 = 'PROCESSING' THEN c.trace_context END AS trace_context
  FROM changed c, event e;

-- name: report_progress
-- A progress report of a PROCESSING request, as a status change is recorded: requests + request_events
-- + outbox in one statement, with the next version. $2 the fraction done (0..1, or NULL), $3 the
-- message, $4 the partial result; the fraction never moves back unless $5 (the handler said so), so a
-- retried attempt starting over does not undo what the client saw. No row back: the request is not
-- PROCESSING (it ended, or a stale attempt reported late).
WITH changed AS (
    UPDATE requests
       SET version = version + 1, updated_at = now(),
           progress = jsonb_strip_nulls(jsonb_build_object(
               'fraction', CASE WHEN $5::boolean THEN $2::float8 ELSE greatest($2::float8, (progress ->> 'fraction')::float8) END,
               'message', $3::text, 'partial', $4::jsonb, 'at', ackflow_timestamp(now())))
     WHERE id = $1 AND status = 'PROCESSING'
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.progress', r.status, r.version, ackflow_request_state(r) FROM changed r
    RETURNING id, request_id, tenant_id, topic, data
)
INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
SELECT topic, tenant_id, request_id, id, data FROM event
RETURNING event_id;

-- name: mark_waiting
-- A workflow kind's run waits for the outside input $2 (NULL: it stopped waiting, its wait timed out),
-- recorded as a status change is, with a request.waiting event. $3: which of the run's waits this is
-- (migration 0022). Run again (a retried or replayed local activity), it changes nothing: the request
-- already says so, or that wait's input has arrived since (kept with the wait it answered).
WITH changed AS (
    UPDATE requests
       SET version = version + 1, updated_at = now(),
           waiting = CASE WHEN $2::text IS NOT NULL
                          THEN jsonb_build_object('input', $2::text, 'since', ackflow_timestamp(now())) END,
           input_wait = CASE WHEN $2::text IS NOT NULL THEN $3::integer END
     WHERE id = $1 AND status = 'PROCESSING' AND (waiting ->> 'input') IS DISTINCT FROM $2::text
       AND NOT EXISTS (SELECT FROM request_inputs i
                        WHERE i.request_id = $1 AND i.name = $2::text AND i.answered_wait >= $3::integer
                          AND $3::integer > 0)
    RETURNING *
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.waiting', r.status, r.version, ackflow_request_state(r) FROM changed r
    RETURNING id, request_id, tenant_id, topic, data
)
INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
SELECT topic, tenant_id, request_id, id, data FROM event;

-- name: deliver_input
-- POST /v1/requests/{id}/input: only while the tenant's request $1 waits for the input named $3. In one
-- statement: the request runs on (no longer waiting), the value is kept, a request.input_received
-- event goes to the channels, and a request.input row asks the relay to signal the workflow (the
-- gateway never calls Temporal). `seq` (the request's version then) lets the workflow drop a re-sent
-- signal. No row back: no such request of the tenant, or it does not wait for that input.
WITH changed AS (
    UPDATE requests SET version = version + 1, updated_at = now(), waiting = NULL
     WHERE id = $1 AND tenant_id = $2 AND status = 'PROCESSING' AND waiting ->> 'input' = $3
    RETURNING *
), kept AS (
    -- With the wait it answered: the statement's snapshot still has the request's input_wait.
    INSERT INTO request_inputs (request_id, name, value, answered_wait)
    SELECT id, $3, $4::jsonb, (SELECT input_wait FROM requests WHERE id = $1) FROM changed
    ON CONFLICT (request_id, name) DO UPDATE
       SET value = excluded.value, received_at = now(), answered_wait = excluded.answered_wait
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT r.id, r.tenant_id, 'request.input_received', r.status, r.version, ackflow_request_state(r) FROM changed r
    RETURNING id, request_id, tenant_id, topic, data
), relayed AS (
    INSERT INTO outbox (topic, tenant_id, request_id, payload)
    SELECT 'request.input', c.tenant_id, c.id,
           jsonb_build_object('workflow_id', 'work-' || c.id::text, 'name', $3::text, 'value', $4::jsonb, 'seq', c.version)
      FROM changed c
)
INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
SELECT topic, tenant_id, request_id, id, data FROM event
RETURNING event_id;

-- name: request_waiting
-- Why an input was refused: the tenant's request's status, and what it waits for (NULL: nothing).
SELECT status, waiting FROM requests WHERE id = $1 AND tenant_id = $2;

-- name: get_request
-- workflow_id: the batch's workflow; requests started before batches ran in `request-<id>`.
-- trace_context: for the GET's span to link to (not part of the answer).
SELECT id, kind, status, version, payload, result, error, created_at, updated_at, completed_at, progress, waiting,
       scheduled_for, expires_at, concurrency_key, priority, tags, ackflow_waiting_for(requests) AS waiting_for,
       coalesce(workflow_id, CASE WHEN admitted_at IS NOT NULL THEN 'request-' || id::text END) AS workflow_id,
       trace_context
  FROM requests WHERE id = $1 AND tenant_id = $2;

-- name: transition_requests
-- Many status changes in one statement, as transition_request does one: $1 is a JSON array of
-- {id, status, result, error}; each request moves only if its status is one of $2. Returns the rows
-- that moved (with the payload and trace context on a move to PROCESSING, which the handler runs on next).
-- A move to PROCESSING of a request past its expires_at records CANCELLED (Expired) instead.
WITH wanted AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS w (id uuid, status text, result jsonb, error jsonb)
), changed AS (
    UPDATE requests r
       SET status = CASE WHEN w.status = 'PROCESSING' AND r.expires_at <= now() THEN 'CANCELLED' ELSE w.status END,
           version = r.version + 1, updated_at = now(), result = coalesce(w.result, r.result),
           error = CASE WHEN w.status = 'PROCESSING' AND r.expires_at <= now() THEN ackflow_expired_error(r.expires_at)
                        ELSE coalesce(w.error, r.error) END,
           completed_at = CASE WHEN w.status IN ('DONE', 'FAILED', 'CANCELLED')
                                 OR (w.status = 'PROCESSING' AND r.expires_at <= now()) THEN now() END,
           waiting = CASE WHEN w.status IN ('DONE', 'FAILED', 'CANCELLED') THEN NULL ELSE r.waiting END
      FROM wanted w
     WHERE r.id = w.id AND r.status = ANY ($2::text[])
    RETURNING r.*
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT c.id, c.tenant_id, 'request.' || lower(c.status), c.status, c.version, ackflow_request_state(c) FROM changed c
    RETURNING id, request_id, tenant_id, topic, data
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT topic, tenant_id, request_id, id, data FROM event
)
SELECT c.id, c.status, c.version, e.id AS event_id, CASE WHEN c.status = 'PROCESSING' THEN c.payload END AS payload,
       CASE WHEN c.status = 'PROCESSING' THEN c.trace_context END AS trace_context
  FROM changed c JOIN event e ON e.request_id = c.id;

-- name: requests_in_progress
-- Of requests $1, those PROCESSING already (a batch run again after its worker died), with payloads.
SELECT id, payload, trace_context FROM requests WHERE id = ANY ($1::uuid[]) AND status = 'PROCESSING';

-- name: requests_ended
-- Of requests $1, those no longer PROCESSING (cancelled while their batch runs, say).
SELECT id FROM requests WHERE id = ANY ($1::uuid[]) AND status <> 'PROCESSING';

-- name: get_request_status
SELECT status, cancel_requested_at FROM requests WHERE id = $1;

-- name: request_status_and_payload
-- A handler's retry finds its request PROCESSING already, and runs on the payload read here.
SELECT status, payload, tenant_id, trace_context FROM requests WHERE id = $1;

-- name: lock_request
SELECT id, status, tenant_id FROM requests WHERE id = $1 AND tenant_id = $2 FOR UPDATE;

-- name: expire_requests
-- The relays' expiry sweep: up to $1 requests still INIT past their expires_at (waiting for admission,
-- or admitted while no worker ran) end CANCELLED (Expired), as a status change is recorded, and
-- their accepted rows no relay holds go. Locks only what no one else holds: it never waits.
-- $2: only requests holding a concurrency key's slot (true), or only the others (false). The sweep
-- runs them as separate transactions: one that holds a waiting request's lock while its trigger
-- waits for the key's slots row could deadlock with the end of a holder waiting for that request.
WITH expired AS (
    SELECT id FROM requests
     WHERE status = 'INIT' AND expires_at <= now() AND coalesce(key_slot, false) = $2
     ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE requests r
       SET status = 'CANCELLED', version = r.version + 1, updated_at = now(), completed_at = now(),
           error = ackflow_expired_error(r.expires_at)
      FROM expired e WHERE r.id = e.id
    RETURNING r.*
), event AS (
    INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
    SELECT c.id, c.tenant_id, 'request.cancelled', c.status, c.version, ackflow_request_state(c) FROM changed c
    RETURNING id, request_id, tenant_id, topic, data
), outbox_row AS (
    INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload)
    SELECT topic, tenant_id, request_id, id, data FROM event
), dropped AS (
    DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o JOIN expired e ON o.request_id = e.id
                                     WHERE o.topic = 'request.accepted' AND o.claimed_until IS NULL
                                       FOR UPDATE OF o SKIP LOCKED)
)
SELECT count(*) FROM changed;

-- name: drop_unclaimed_accept
-- A request cancelled before it started: its accepted row, if no relay holds it, is of no more use
-- (a delayed start's would wait out its delay first). One a relay holds is skipped, never waited
-- for (its claim locks the row, then the request, which this transaction holds), and dropped by it.
DELETE FROM outbox
 WHERE id IN (SELECT id FROM outbox
               WHERE request_id = $1 AND topic = 'request.accepted' AND claimed_until IS NULL
                 FOR UPDATE SKIP LOCKED);

-- name: mark_cancel_requested
-- The cancel row names the request's workflow (a batch's, to signal; NULL for a request of before batches).
WITH marked AS (
    UPDATE requests SET cancel_requested_at = now() WHERE id = $1 AND cancel_requested_at IS NULL
    RETURNING id, tenant_id, workflow_id
)
INSERT INTO outbox (topic, tenant_id, request_id, payload)
SELECT 'request.cancel_requested', tenant_id, id, jsonb_build_object('workflow_id', workflow_id) FROM marked;

-- name: list_requests
-- Keyset pagination, newest first: $3 is the last id of the previous page (UUIDv7 ids sort by time).
-- $6: tags the requests must all carry (NULL: any), $7 a concurrency key (NULL: any).
SELECT id, kind, status, version, payload, result, error, created_at, updated_at, completed_at, progress, waiting,
       scheduled_for, expires_at, concurrency_key, priority, tags, ackflow_waiting_for(requests) AS waiting_for,
       coalesce(workflow_id, CASE WHEN admitted_at IS NOT NULL THEN 'request-' || id::text END) AS workflow_id
  FROM requests
 WHERE tenant_id = $1
   AND ($2::text IS NULL OR status = $2)
   AND ($4::text IS NULL OR kind = $4)
   AND ($3::uuid IS NULL OR id < $3)
   AND ($6::text[] IS NULL OR tags @> $6)
   AND ($7::text IS NULL OR concurrency_key = $7)
 ORDER BY id DESC
 LIMIT $5;

-- name: tenant_for_key
-- The key's tenant (first: `ackflow dev` reads it alone), the key's id, and the tenant's name (metrics' label).
SELECT k.tenant_id, k.id, t.name
  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
 WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

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

-- name: wake_outbox_relays
-- $1: the outbox NOTIFY channel (ackflow.db.listen.OUTBOX_CHANNEL), sent outside any accept's transaction.
SELECT pg_notify($1, '');

-- name: claim_outbox
-- One batch of due rows under a lease, committed at once, each accepted request admitted fairly
-- (the statement is the function ackflow_claim_outbox, migrations 0009 and 0013, which say how): $1
-- rows at most, $2 requests in flight at most (NULL: no limit), a lease of $3 seconds; the requests
-- admitted come grouped into `request.batch` rows of at most $4 requests.
SELECT * FROM ackflow_claim_outbox($1, $2, $3, $4);

-- name: settle_outbox
-- The end of a dispatched batch in one statement, for the rows this relay still holds (each under
-- the lease its claim returned: a relay that overran its lease changes nothing another now holds).
-- Rows $1 (leases $2) were dispatched: deleted. Rows $3 (leases $4) failed with errors $5 and are due
-- again in $6 seconds: their lease and their requests' admission are given back, so a request
-- waiting on a failing dispatch holds no place in flight; its rank moves with its due time.
WITH dispatched AS (
    DELETE FROM outbox o
     USING unnest($1::bigint[], $2::timestamptz[]) AS d (id, claimed_until)
     WHERE o.id = d.id AND o.claimed_until = d.claimed_until
), failed AS (
    SELECT * FROM unnest($3::bigint[], $4::timestamptz[], $5::text[], $6::float8[])
        AS f (id, claimed_until, error, delay)
), postponed AS (
    UPDATE outbox o
       SET attempts = o.attempts + 1, last_error = f.error, claimed_until = NULL,
           failing_since = coalesce(o.failing_since, now()), available_at = now() + make_interval(secs => f.delay),
           admit_rank = o.admit_rank + (now() + make_interval(secs => f.delay) - o.available_at)  -- its lead kept
      FROM failed f
     WHERE o.id = f.id AND o.claimed_until = f.claimed_until
    RETURNING o.topic, o.request_id
)
UPDATE requests r SET admitted_at = NULL
  FROM postponed p
 WHERE p.topic = 'request.accepted' AND r.id = p.request_id AND r.completed_at IS NULL;

-- name: dead_letter_outbox
-- Row $1, still under this relay's lease $3, can never be dispatched ($2 says why): kept for
-- operators, never claimed again.
UPDATE outbox
   SET dead_at = now(), claimed_until = NULL, attempts = attempts + 1, last_error = $2,
       failing_since = coalesce(failing_since, now())
 WHERE id = $1 AND claimed_until = $3
RETURNING topic, request_id, request_ids;

-- name: list_outbox
-- For operators, oldest first: dead-lettered rows ($1 true) or rows still waiting or failing.
SELECT id, topic, tenant_id, request_id, attempts, last_error, created_at, available_at, claimed_until,
       failing_since, dead_at
  FROM outbox
 WHERE (dead_at IS NOT NULL) = $1
 ORDER BY created_at, id
 LIMIT $2;

-- name: retry_outbox_row
-- An operator retries a row now: its attempts start again from zero. Not an accepted row whose
-- request has ended meanwhile (a dead letter's request ended FAILED), nor a batch row whose requests
-- all have: there is nothing to start.
UPDATE outbox o
   SET dead_at = NULL, attempts = 0, failing_since = NULL, last_error = NULL, claimed_until = NULL,
       available_at = now()
 WHERE o.id = $1
   AND NOT (o.topic = 'request.accepted'
            AND EXISTS (SELECT 1 FROM requests r WHERE r.id = o.request_id AND r.completed_at IS NOT NULL))
   AND NOT (o.topic = 'request.batch'
            AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = ANY (o.request_ids) AND r.completed_at IS NULL))
RETURNING o.id, o.topic, o.request_id;

-- name: outbox_row
SELECT o.id, o.topic, o.request_id, r.status FROM outbox o LEFT JOIN requests r ON r.id = o.request_id WHERE o.id = $1;

-- name: drop_outbox_row
DELETE FROM outbox WHERE id = $1 RETURNING id, topic, request_id, request_ids;

-- name: ensure_signing_key
-- The named secret, made from $2 by the first caller; everyone after gets the same one.
WITH made AS (
    INSERT INTO signing_keys (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING secret
)
SELECT secret FROM made UNION ALL SELECT secret FROM signing_keys WHERE name = $1 LIMIT 1;

-- name: request_stream_position
-- Where a stream of one request starts: its status and version now, and the version of the event
-- the client saw last ($3 = Last-Event-ID, 0 for none). No row: no such request for this tenant.
SELECT r.status, r.version, r.trace_context,
       (SELECT coalesce(max(e.version), 0) FROM request_events e WHERE e.request_id = r.id AND e.id <= $3)
           AS seen_version
  FROM requests r
 WHERE r.id = $1 AND r.tenant_id = $2;

-- name: latest_tenant_event_id
SELECT coalesce(max(id), 0) FROM request_events WHERE tenant_id = $1;

-- name: fan_out_webhooks
-- The webhook deliveries of a group of status events, in one statement. The events come as arrays
-- in step ($1 ids, $2 topics, $3 tenant ids, $4 request ids, $5 the exact bodies to send); each
-- gets one delivery per matching endpoint of its tenant (and one for its request's own
-- callback_url), looked up for that event alone by the tenant's and the request's index. The
-- wildcard (and a callback_url without callback_events) leaves out the opt-in event types ($6).
-- Idempotent: a re-sent outbox row finds its deliveries already there.
-- Ids are time-ordered (UUIDv7 layout, built by hand for Postgres < 18) like every other id, so an
-- endpoint's delivery log, ordered by id, is newest first.
INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, request_id, event_id, message_id, event_type, url, body, state)
SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                      PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                      FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid,
       ev.tenant_id, t.endpoint_id, ev.request_id, ev.event_id, 'msg_' || ev.event_id, ev.topic, t.url, ev.body, 'pending'
  FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::uuid[], $5::text[])
       AS ev (event_id, topic, tenant_id, request_id, body)
 CROSS JOIN LATERAL (
    SELECT e.id AS endpoint_id, e.url
      FROM webhook_endpoints e
     WHERE e.tenant_id = ev.tenant_id AND e.deleted_at IS NULL AND e.enabled
       AND (ev.topic = ANY (e.event_types)
            OR (split_part(ev.topic, '.', 1) || '.*' = ANY (e.event_types) AND ev.topic <> ALL ($6::text[])))
    UNION ALL
    SELECT NULL, r.callback_url
      FROM requests r
     WHERE r.id = ev.request_id AND r.callback_url IS NOT NULL
       AND (ev.topic = ANY (r.callback_events)
            OR ((r.callback_events IS NULL OR split_part(ev.topic, '.', 1) || '.*' = ANY (r.callback_events))
                AND ev.topic <> ALL ($6::text[])))
 ) t
ON CONFLICT DO NOTHING;

-- name: claim_webhook_deliveries
-- Run right after lock_webhook_lanes, in its transaction, with the lanes it returned ($1): at most
-- $2 due deliveries (pending, or delivering under a lease that ran out), under a lease of $3 s, with
-- all an attempt needs (the columns of delivery_for_attempt). Each lane gives only what it may send
-- now: no more than its endpoint's max_concurrency under live leases, counted across every process
-- ($4 for a tenant's callback URLs), nor than the tokens in its bucket, which it spends; a disabled
-- endpoint's deliveries are all due (they fail without an attempt). Deliveries are taken round-robin:
-- ranked within their lane, then within their tenant, lowest ranks first, so no lane or tenant with
-- a backlog delays another's first attempts.
WITH lane AS (
    SELECT l.lane, e.enabled AND e.deleted_at IS NULL AS live, coalesce(e.max_concurrency, $4) AS max_concurrency,
           e.rate_limit_per_second AS rate,
           least(e.rate_limit_per_second,
                 b.tokens + extract(epoch FROM now() - b.refilled_at) * e.rate_limit_per_second) AS tokens
      FROM unnest($1::uuid[]) AS l (lane)
      LEFT JOIN webhook_endpoints e ON e.id = l.lane
      LEFT JOIN webhook_endpoint_buckets b ON b.endpoint_id = l.lane
), room AS (
    SELECT lane.lane, lane.rate, lane.tokens,
           CASE WHEN lane.live IS FALSE THEN $2
                ELSE greatest(0, least($2,
                    lane.max_concurrency - (SELECT count(*) FROM webhook_deliveries l
                                             WHERE coalesce(l.endpoint_id, l.tenant_id) = lane.lane
                                               AND l.lease_until > now()),
                    coalesce(floor(lane.tokens), $2)))
           END AS n
      FROM lane
), candidate AS (
    SELECT c.id, c.tenant_id, c.next_attempt_at, room.lane,
           row_number() OVER (PARTITION BY room.lane ORDER BY c.next_attempt_at, c.id) AS lane_rank
      FROM room CROSS JOIN LATERAL (
            SELECT d.id, d.tenant_id, d.next_attempt_at
              FROM webhook_deliveries d
             WHERE coalesce(d.endpoint_id, d.tenant_id) = room.lane AND d.state IN ('pending', 'delivering')
               AND d.next_attempt_at <= now()
             ORDER BY coalesce(d.endpoint_id, d.tenant_id), d.next_attempt_at
             LIMIT room.n
               FOR UPDATE SKIP LOCKED) c
), chosen AS (
    SELECT id, lane
      FROM (SELECT id, lane, lane_rank, next_attempt_at,
                   row_number() OVER (PARTITION BY tenant_id ORDER BY lane_rank, next_attempt_at, id) AS tenant_rank
              FROM candidate) ranked
     ORDER BY tenant_rank, lane_rank, next_attempt_at
     LIMIT $2
), spent AS (
    UPDATE webhook_endpoint_buckets b SET tokens = room.tokens - taken.n, refilled_at = now()
      FROM (SELECT lane, count(*) AS n FROM chosen GROUP BY lane) taken JOIN room ON room.lane = taken.lane
     WHERE b.endpoint_id = taken.lane AND room.rate IS NOT NULL
), claimed AS (
    UPDATE webhook_deliveries d
       SET state = 'delivering', lease_until = now() + make_interval(secs => $3),
           next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
      FROM chosen
     WHERE d.id = chosen.id
    RETURNING d.*
)
SELECT d.id, d.tenant_id, d.endpoint_id, d.message_id, coalesce(e.url, d.url) AS url, d.body, d.state, d.attempts,
       d.single_attempt, e.enabled AS endpoint_enabled, e.deleted_at AS endpoint_deleted_at,
       ARRAY(SELECT secret FROM webhook_secrets s
              WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.id DESC) AS secrets,
       (SELECT r.trace_context FROM requests r WHERE r.id = d.request_id) AS trace_context
  FROM claimed d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id;

-- name: extend_webhook_leases
-- The dispatcher attempting these deliveries is alive: keep the others off them.
UPDATE webhook_deliveries
   SET lease_until = now() + make_interval(secs => $2), next_attempt_at = now() + make_interval(secs => $2)
 WHERE id = ANY ($1::uuid[]) AND state = 'delivering';

-- name: delivery_for_attempt
-- The endpoint's current url: a resend after the partner fixed its url goes to the fixed one. The
-- endpoint's active signing secrets, newest first (none for a callback_url: the tenant's secret signs).
-- trace_context: its request's, the parent of the attempt's span (NULL for a test delivery).
SELECT d.id, d.tenant_id, d.endpoint_id, d.message_id, coalesce(e.url, d.url) AS url, d.body, d.state, d.attempts,
       d.single_attempt, e.enabled AS endpoint_enabled, e.deleted_at AS endpoint_deleted_at,
       ARRAY(SELECT secret FROM webhook_secrets s
              WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())
              ORDER BY s.id DESC) AS secrets,
       (SELECT r.trace_context FROM requests r WHERE r.id = d.request_id) AS trace_context
  FROM webhook_deliveries d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
 WHERE d.id = $1;

-- name: delivery_state
SELECT state, attempts FROM webhook_deliveries WHERE id = $1;

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

-- name: record_attempt
-- The attempt, and the delivery's new state ($4) and the url it went to ($10), in one statement, only
-- if the delivery is still in a state the attempter owns ($11) with the attempts it read ($2 - 1):
-- a late or duplicate attempter records nothing. Returns the id if it recorded. A delivery handed
-- off ($4 handoff) is the recording dispatcher's for $13 s while it starts the retry workflow;
-- $12 is the receiver's Retry-After, kept for that hand-off.
WITH recorded AS (
    UPDATE webhook_deliveries
       SET state = $4, attempts = $2, last_status = $5, last_error = $8, url = $10, lease_until = NULL,
           retry_after = $12, next_attempt_at = now() + make_interval(secs => $13), updated_at = now()
     WHERE id = $1 AND state = ANY ($11::text[]) AND attempts = $2 - 1
    RETURNING id
), attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body, error)
    SELECT id, $2, $3, coalesce($9, now()), $5, $6, $7, $8 FROM recorded
)
SELECT id FROM recorded;

-- name: record_successes
-- Succeeded attempts of many deliveries in one statement (one array element per delivery): each
-- attempt, its delivery now succeeded, and its endpoint healthy again; like record_attempt, only for a
-- delivery still in one of the states its attempter owns ($10: comma-separated) with the attempts it
-- read. Returns the ids it recorded.
WITH done AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::int[], $7::text[],
                         $8::text[], $10::text[])
        AS t (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body, url, owned)
), recorded AS (
    UPDATE webhook_deliveries d
       SET state = 'succeeded', attempts = done.attempt, last_status = done.status_code, last_error = NULL,
           url = done.url, lease_until = NULL, retry_after = NULL, updated_at = now()
      FROM done
     WHERE d.id = done.delivery_id AND d.state = ANY (string_to_array(done.owned, ','))
       AND d.attempts = done.attempt - 1
    RETURNING d.id
), attempts AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body)
    SELECT delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, response_body
      FROM done JOIN recorded ON recorded.id = done.delivery_id
), healthy AS (
    UPDATE webhook_endpoints SET failing_since = NULL
     WHERE id = ANY ($9::uuid[]) AND failing_since IS NOT NULL
)
SELECT id FROM recorded;

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
-- Its retry workflow was started (or signalled): the workflow owns it now, unless it moved on meanwhile
-- (a resend, or the workflow's own attempt).
UPDATE webhook_deliveries SET state = 'retrying', retry_after = NULL, updated_at = now()
 WHERE id = $1 AND state = $2 AND attempts = $3;

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

-- name: list_request_deliveries
-- A request's deliveries (its endpoints' and its callback_url's), newest first; $4 a cursor (id).
SELECT id, endpoint_id, request_id, event_id, message_id, event_type, url, state, attempts, last_status, last_error,
       created_at, updated_at
  FROM webhook_deliveries
 WHERE request_id = $1 AND tenant_id = $2 AND ($3::uuid IS NULL OR id < $3)
 ORDER BY id DESC
 LIMIT $4;

-- name: get_delivery
SELECT id, endpoint_id, request_id, event_id, message_id, event_type, url, state, attempts, last_status, last_error,
       created_at, updated_at
  FROM webhook_deliveries WHERE id = $1 AND tenant_id = $2;

-- name: delivery_attempts
SELECT attempt, trigger, attempted_at, status_code, latency_ms, response_body, error
  FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id;

-- name: requeue_delivery
-- A resend. A finished delivery goes back to pending for one attempt now; one on its retry schedule
-- (retrying, or handoff) becomes resending, so a dispatcher signals its workflow to attempt now and
-- the schedule goes on; one already waiting for an attempt (pending, resending) stays as it is.
-- None while an attempt is under way (delivering, always under a lease: it ends soon).
UPDATE webhook_deliveries
   SET state = CASE WHEN state IN ('succeeded', 'failed') THEN 'pending'
                    WHEN state IN ('retrying', 'handoff') THEN 'resending' ELSE state END,
       single_attempt = single_attempt OR state IN ('succeeded', 'failed'),
       next_attempt_at = CASE WHEN state IN ('pending', 'resending') THEN next_attempt_at ELSE now() END,
       updated_at = now()
 WHERE id = $1 AND tenant_id = $2 AND state <> 'delivering'
RETURNING id;

-- name: requeue_failed_since
UPDATE webhook_deliveries
   SET state = 'pending', next_attempt_at = now(), single_attempt = true, updated_at = now()
 WHERE endpoint_id = $1 AND tenant_id = $2 AND state = 'failed' AND created_at >= $3;

-- name: lock_idempotency_key
-- $1: the key's lock id (gateway/idempotency.py); held until the claim's transaction ends, never waited for.
SELECT pg_try_advisory_xact_lock($1);

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

-- name: tenant_accept_rate
SELECT accept_rate_per_second FROM tenants WHERE id = $1;

-- name: set_tenant_accept_rate
UPDATE tenants SET accept_rate_per_second = $2 WHERE name = $1 RETURNING id;

-- name: set_tenant_admission_weight
UPDATE tenants SET admission_weight = $2 WHERE name = $1 RETURNING id;

-- name: list_api_keys
SELECT k.prefix, k.created_at, k.revoked_at
  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
 WHERE t.name = $1
 ORDER BY k.created_at;


-- Stream replay, paged by rows and bytes (gateway/streams.py): a page is at most $rows events and
-- at most $bytes of `data`, except that it always holds the first event, however large. `more` on
-- the last row says whether anything follows it. Only the rows returned are detoasted: the window
-- runs over sizes recorded at insert (migration 0012).

-- name: request_events_page
-- $1 request, $2 tenant, $3 after this version, $4 rows, $5 bytes.
SELECT id, topic, status, version, request_id, data, more FROM (
    SELECT id, topic, status, version, request_id, data,
           row_number() OVER w AS n,
           sum(coalesce(data_bytes, octet_length(data::text))) OVER w AS upto,
           lead(id) OVER w IS NOT NULL AS more
      FROM (SELECT id, topic, status, version, request_id, data, data_bytes
              FROM request_events
             WHERE request_id = $1 AND tenant_id = $2 AND version > $3
             ORDER BY version
             LIMIT $4 + 1) candidates
    WINDOW w AS (ORDER BY version)
) page
 WHERE n <= $4 AND (n = 1 OR upto <= $5)
 ORDER BY version;

-- name: tenant_events_page
-- $1 tenant, $2 after this event id, $3 kind or NULL, $4 status or NULL, $5 rows, $6 bytes, $7 tag or NULL.
SELECT id, topic, status, version, request_id, data, more FROM (
    SELECT id, topic, status, version, request_id, data,
           row_number() OVER w AS n,
           sum(coalesce(data_bytes, octet_length(data::text))) OVER w AS upto,
           lead(id) OVER w IS NOT NULL AS more
      FROM (SELECT id, topic, status, version, request_id, data, data_bytes
              FROM request_events
             WHERE tenant_id = $1 AND id > $2
               AND ($3::text IS NULL OR data ->> 'kind' = $3)
               AND ($4::text IS NULL OR status = $4)
               AND ($7::text IS NULL OR data -> 'tags' ? $7)
             ORDER BY id
             LIMIT $5 + 1) candidates
    WINDOW w AS (ORDER BY id)
) page
 WHERE n <= $5 AND (n = 1 OR upto <= $6)
 ORDER BY id;

-- Revocation (gateway/open_streams.py, gateway/auth.py, `ackflow key revoke`): a key is revoked by
-- its tenant and exact prefix, and gateways end the streams and capability tokens of revoked keys.

-- name: active_key_tenant
SELECT tenant_id FROM api_keys WHERE id = $1 AND revoked_at IS NULL;

-- name: active_api_keys
-- Which of these key ids are still active (the others' open streams are ended).
SELECT id FROM api_keys WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL;

-- name: tenant_keys_with_prefix
-- The tenant's active keys with this prefix ($1 tenant name, $2 prefix), locked until revoked.
SELECT k.id, k.key_hash
  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
 WHERE t.name = $1 AND k.prefix = $2 AND k.revoked_at IS NULL
   FOR UPDATE OF k;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING key_hash;

-- Reconciling admitted requests with their workflows -------------------------------------------

-- name: requests_to_reconcile
-- Up to $2 requests in flight for at least $1 seconds (long enough for their workflow to have
-- started), least recently checked first.
SELECT r.id, coalesce(r.workflow_id, 'request-' || r.id::text) AS workflow_id
  FROM requests r
 WHERE r.admitted_at IS NOT NULL AND r.completed_at IS NULL
   AND r.admitted_at < now() - make_interval(secs => $1)
 ORDER BY coalesce(r.reconciled_at, r.admitted_at)
 LIMIT $2;

-- name: mark_reconciled
UPDATE requests SET reconciled_at = now() WHERE id = ANY ($1::uuid[]);

-- name: dispatch_again
-- Request $1's workflow vanished from Temporal before it ended: accept it into the outbox again
-- (its place in flight given back until it is admitted anew).
-- Not while its accepted row, or a batch row listing it, is still in the outbox (a relay is about to
-- start it).
WITH request AS (
    UPDATE requests SET admitted_at = NULL, workflow_id = NULL
     WHERE id = $1 AND completed_at IS NULL AND admitted_at IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM outbox WHERE request_id = $1 AND topic = 'request.accepted')
       AND NOT EXISTS (SELECT 1 FROM outbox WHERE topic = 'request.batch' AND request_ids @> ARRAY[$1::uuid])
    RETURNING id, tenant_id, kind, priority_lead
)
INSERT INTO outbox (topic, tenant_id, request_id, event_id, payload, admit_rank)
SELECT 'request.accepted', r.tenant_id, r.id,
       (SELECT e.id FROM request_events e WHERE e.request_id = r.id AND e.version = 1),
       jsonb_build_object('kind', r.kind, 'task_queue', h.task_queue, 'handler', h.options),
       now() - r.priority_lead
  FROM request r JOIN handler_kinds h ON h.kind = r.kind
RETURNING id;

-- Retention (ackflow/db/retention.py). Each statement deletes at most $1 rows, oldest first, and is
-- its own short transaction; rows another pruner holds are skipped (SKIP LOCKED), so several relays
-- prune side by side without waiting on each other. The indexes of migration 0011 make each batch
-- an index range scan; the batch is then deleted by the physical addresses (ctid) of the rows it
-- locked, a TID scan, because with `id IN (batch)` the planner may join the batch to a sequential
-- scan of the whole table (measured on idempotency_keys). A locked row cannot move, so its ctid
-- holds until the statement ends.

-- name: prune_idempotency_keys
-- Keys past their expiry (ACKFLOW_IDEMPOTENCY_TTL_SECONDS): idempotent_response ignores them already.
DELETE FROM idempotency_keys
 WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM idempotency_keys
         WHERE expires_at < now()
         ORDER BY expires_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_webhook_deliveries
-- Deliveries that succeeded or failed more than $2 seconds ago, with their attempts (ON DELETE
-- CASCADE). A delivery pending, delivering or retrying is never pruned, however old.
DELETE FROM webhook_deliveries
 WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_deliveries
         WHERE state IN ('succeeded', 'failed') AND updated_at < now() - make_interval(secs => $2)
         ORDER BY updated_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_dead_outbox_rows
-- Dead-lettered outbox rows, kept for operators ($2 seconds: as long as requests are kept), so that
-- their requests can go too.
DELETE FROM outbox
 WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM outbox
         WHERE dead_at < now() - make_interval(secs => $2)
         ORDER BY dead_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_requests
-- Requests that ended more than $2 seconds ago, with their events (ON DELETE CASCADE), unless work
-- on them is still under way: an outbox row not yet relayed, or a webhook delivery not finished.
DELETE FROM requests
 WHERE ctid = ANY (ARRAY(
        SELECT r.ctid FROM requests r
         WHERE r.completed_at < now() - make_interval(secs => $2)
           AND r.status IN ('DONE', 'FAILED', 'CANCELLED')
           AND NOT EXISTS (SELECT FROM outbox o WHERE o.request_id = r.id)
           AND NOT EXISTS (SELECT FROM webhook_deliveries d
                            WHERE d.request_id = r.id AND d.state NOT IN ('succeeded', 'failed'))
         ORDER BY r.completed_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_submitted_batches
-- Batches submitted more than $2 seconds ago whose requests are all pruned.
DELETE FROM submitted_batches
 WHERE id = ANY (ARRAY(
        SELECT b.id FROM submitted_batches b
         WHERE b.created_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT FROM requests r WHERE r.submitted_batch_id = b.id)
         ORDER BY b.created_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_webhook_endpoint_events
DELETE FROM webhook_endpoint_events
 WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_endpoint_events
         WHERE created_at < now() - make_interval(secs => $2)
         ORDER BY created_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- name: prune_deleted_webhook_endpoints
-- Endpoints deleted more than $2 seconds ago, with their secrets and events (ON DELETE CASCADE),
-- once none of their deliveries is left: deliveries go by their own retention, so this statement
-- never cascades into an endpoint's whole delivery log.
DELETE FROM webhook_endpoints
 WHERE ctid = ANY (ARRAY(
        SELECT e.ctid FROM webhook_endpoints e
         WHERE e.deleted_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT FROM webhook_deliveries d WHERE d.endpoint_id = e.id)
         ORDER BY e.deleted_at
         LIMIT $1
           FOR UPDATE SKIP LOCKED));

-- Webhook dispatch: hand-offs to the retry workflow, lanes, and endpoint limits shared by every process
-- (callbacks/dispatcher.py, callbacks/limits.py; the states are drawn in migration 0010).

-- name: lock_webhook_lanes
-- The first $2 lanes after $1 (NULL: from the start) that have due deliveries, found by a skip scan
-- of webhook_deliveries_lane_idx: one index descent a lane, however many deliveries wait in it.
-- Endpoint lanes come locked (their bucket rows, until the caller's transaction ends) so no other
-- dispatcher claims from them meanwhile; one another dispatcher holds is skipped. Callback-URL lanes
-- (a tenant id) are not locked: they have no limits to share.
WITH RECURSIVE lanes (lane) AS (
    (SELECT coalesce(endpoint_id, tenant_id) FROM webhook_deliveries
      WHERE state IN ('pending', 'delivering') AND ($1::uuid IS NULL OR coalesce(endpoint_id, tenant_id) > $1)
      ORDER BY 1 LIMIT 1)
    UNION ALL
    SELECT (SELECT coalesce(d.endpoint_id, d.tenant_id) FROM webhook_deliveries d
             WHERE d.state IN ('pending', 'delivering') AND coalesce(d.endpoint_id, d.tenant_id) > lanes.lane
             ORDER BY 1 LIMIT 1)
      FROM lanes
     WHERE lanes.lane IS NOT NULL
), due AS (
    SELECT lane FROM lanes
     WHERE lane IS NOT NULL
       AND EXISTS (SELECT 1 FROM webhook_deliveries d
                    WHERE coalesce(d.endpoint_id, d.tenant_id) = lanes.lane AND d.state IN ('pending', 'delivering')
                      AND d.next_attempt_at <= now())
     LIMIT $2
), locked AS (
    SELECT endpoint_id FROM webhook_endpoint_buckets WHERE endpoint_id IN (SELECT lane FROM due)
       FOR UPDATE SKIP LOCKED
)
SELECT lane, true AS locked FROM due WHERE lane IN (SELECT endpoint_id FROM locked)
UNION ALL
SELECT lane, false FROM due WHERE NOT EXISTS (SELECT 1 FROM webhook_endpoint_buckets b WHERE b.endpoint_id = due.lane);

-- name: claim_webhook_handoffs
-- Up to $1 deliveries whose hand-off to their retry workflow is due (a start that failed, a dispatcher
-- that died before it, a resend to signal), the claimer's for $2 s.
UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
 WHERE d.id IN (SELECT id FROM webhook_deliveries
                 WHERE state IN ('handoff', 'resending') AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT $1
                   FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.state, d.attempts, d.retry_after;

-- name: postpone_webhook_handoff
-- The hand-off failed (Temporal unreachable): try again in $3 s, by whichever dispatcher claims it.
UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
 WHERE id = $1 AND state = $2;

-- name: lock_endpoint_bucket
-- Before take_attempt_slot, in its transaction: the delivery's endpoint's limits, for this transaction.
SELECT b.endpoint_id FROM webhook_endpoint_buckets b JOIN webhook_deliveries d ON d.endpoint_id = b.endpoint_id
 WHERE d.id = $1
   FOR UPDATE OF b;

-- name: take_attempt_slot
-- A retry workflow's attempt of delivery $1, if it is still in one of the states $2: a send slot of
-- its endpoint under the same limits as claim_webhook_deliveries (a concurrency slot held by a lease
-- of $3 s, a token spent). Returns whether the delivery is still in those states, whether the slot
-- was taken, and if not, how long until the bucket has a token (NULL: a concurrency slot is awaited).
WITH d AS (
    SELECT id, endpoint_id FROM webhook_deliveries WHERE id = $1 AND state = ANY ($2::text[])
), room AS (
    SELECT d.id, e.id AS endpoint_id, e.enabled AND e.deleted_at IS NULL AS live, e.rate_limit_per_second AS rate,
           least(e.rate_limit_per_second,
                 b.tokens + extract(epoch FROM now() - b.refilled_at) * e.rate_limit_per_second) AS tokens,
           e.max_concurrency - (SELECT count(*) FROM webhook_deliveries l
                                 WHERE coalesce(l.endpoint_id, l.tenant_id) = e.id AND l.lease_until > now()) AS free
      FROM d LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
      LEFT JOIN webhook_endpoint_buckets b ON b.endpoint_id = e.id
), ok AS (
    SELECT * FROM room
     WHERE endpoint_id IS NULL OR live IS NOT TRUE OR (free > 0 AND (rate IS NULL OR tokens >= 1))
), spent AS (
    UPDATE webhook_endpoint_buckets b SET tokens = ok.tokens - 1, refilled_at = now()
      FROM ok
     WHERE b.endpoint_id = ok.endpoint_id AND ok.rate IS NOT NULL AND ok.live
), leased AS (
    UPDATE webhook_deliveries w SET lease_until = now() + make_interval(secs => $3)
      FROM ok
     WHERE w.id = ok.id
    RETURNING w.id
)
SELECT EXISTS (SELECT 1 FROM d) AS owned, EXISTS (SELECT 1 FROM leased) AS taken,
       (SELECT (1 - tokens) / rate FROM room WHERE tokens < 1) AS token_in_seconds;

-- name: stage_health
-- Each stage's backlog at a glance (ackflow/db/stage_health.py), one row per figure: the stage, its
-- key (a topic, a tenant's name, a delivery state, or ''), a count, and for waiting rows the age of
-- the oldest in seconds. (Stage names have an underscore, so none reads as a delivery state.) Each
-- part but the first reads a partial index or a small table; the first reads the outbox, a queue
-- that is small unless work is backed up (then it is what an operator wants counted). Run when the
-- relay is scraped, at most once a second: outbox rows not dead-lettered (the oldest by when it was
-- due: its commit, or a delayed start's scheduled time; a delayed start not yet due is counted, not
-- aged), dead letters, requests in flight (admitted, not ended) and waiting for admission (accepted
-- rows due, neither claimed nor dead), unfinished and failed webhook deliveries, endpoints disabled.
SELECT 'outbox_rows' AS stage, topic AS key, count(*) AS n,
       extract(epoch FROM now() - min(coalesce((payload ->> 'due_at')::timestamptz, created_at))
                                 FILTER (WHERE topic <> 'request.accepted' OR available_at <= now()))::float8 AS oldest
  FROM outbox WHERE dead_at IS NULL GROUP BY topic
UNION ALL
SELECT 'dead_letters', '', count(*), NULL FROM outbox WHERE dead_at IS NOT NULL
UNION ALL
SELECT 'in_flight', t.name, f.n, NULL
  FROM (SELECT tenant_id, count(*) AS n FROM requests
         WHERE admitted_at IS NOT NULL AND completed_at IS NULL GROUP BY tenant_id) f
  JOIN tenants t ON t.id = f.tenant_id
UNION ALL
SELECT 'waiting_admission', t.name, w.n, w.oldest
  FROM (SELECT tenant_id, count(*) AS n,
               extract(epoch FROM now() - min(coalesce((payload ->> 'due_at')::timestamptz, created_at)))::float8 AS oldest
          FROM outbox
         WHERE topic = 'request.accepted' AND dead_at IS NULL AND claimed_until IS NULL AND available_at <= now()
         GROUP BY tenant_id) w
  JOIN tenants t ON t.id = w.tenant_id
UNION ALL
SELECT 'delivery_states', state, count(*), NULL FROM webhook_deliveries
 WHERE state NOT IN ('succeeded', 'failed') GROUP BY state
UNION ALL
SELECT 'delivery_states', 'failed', count(*), NULL FROM webhook_deliveries WHERE state = 'failed'
UNION ALL
SELECT 'endpoints_disabled', '', count(*), NULL FROM webhook_endpoints WHERE NOT enabled AND deleted_at IS NULL;

-- name: operator_request
-- `ackflow requests show`: one request of any tenant, with the W3C traceparent it was accepted in.
SELECT r.id, t.name AS tenant, r.tenant_id, r.kind, r.status, r.version, r.error, r.created_at, r.updated_at,
       r.completed_at, r.callback_url,
       coalesce(r.workflow_id, CASE WHEN r.admitted_at IS NOT NULL THEN 'request-' || r.id::text END) AS workflow_id,
       r.trace_context
  FROM requests r JOIN tenants t ON t.id = r.tenant_id
 WHERE r.id = $1;

-- name: operator_request_events
SELECT id, topic, status, version, created_at, data FROM request_events WHERE request_id = $1 ORDER BY version, id;

-- name: operator_request_deliveries
SELECT id, endpoint_id, event_id, event_type, url, state, attempts, last_status, last_error, created_at, updated_at
  FROM webhook_deliveries WHERE request_id = $1 ORDER BY created_at, id;

-- name: operator_delivery_attempts
SELECT delivery_id, attempt, trigger, attempted_at, status_code, latency_ms, error
  FROM webhook_attempts WHERE delivery_id = ANY ($1::uuid[]) ORDER BY id;

-- name: list_handler_kinds
-- GET /v1/kinds: every kind a worker has registered, with its scheduling options ('{}' before a
-- worker registered them: NULL).
SELECT kind, task_queue, registered_at, nullif(options, '{}'::jsonb) AS options FROM handler_kinds ORDER BY kind;
