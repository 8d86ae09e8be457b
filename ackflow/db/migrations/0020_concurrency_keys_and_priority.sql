-- Concurrency keys, priority and tags (issue 16), set on POST /v1/requests.
--
-- Concurrency keys: at most `concurrency_limit` requests of a tenant with the same `concurrency_key`
-- hold a slot at once. A request holds its key's slot from the moment it may be admitted until it
-- ends (key_slot true and completed_at NULL); one accepted while its key is full waits (key_slot
-- false) with its accepted row out of the claim's reach (available_at 'infinity'), and the end of a
-- slot holder, whatever path records it, passes the slot to the oldest waiting request of the key in
-- the same transaction (the trigger below). concurrency_slots counts each key's holders, and is what
-- accepts and ends of one key serialise on. key_slot is NULL for a request without a key.
--
-- Priority: 1 (first) .. 5, default 3 (NULL: not given). Within a tenant's fair share the claim admits
-- by admit_rank, the time a request became due less a lead of (5 - priority) aging steps
-- (priority_lead, from ACKFLOW_PRIORITY_AGING_SECONDS at accept): higher priority goes first, and a
-- request that has waited that much longer outranks fresher work of a higher priority, so no
-- priority starves. A due row's admit_rank is never after now(), which bounds the claim's scan.
--
-- Tags: a few short strings, to filter the list and the tenant's event stream by.
ALTER TABLE requests
    ADD COLUMN concurrency_key   text,
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1),
    ADD COLUMN key_slot          boolean,
    ADD COLUMN priority          smallint CHECK (priority BETWEEN 1 AND 5),
    ADD COLUMN priority_lead     interval NOT NULL DEFAULT '0',
    ADD COLUMN tags              text[];

CREATE TABLE concurrency_slots (
    tenant_id uuid    NOT NULL,
    key       text    NOT NULL,
    taken     integer NOT NULL CHECK (taken >= 0),
    PRIMARY KEY (tenant_id, key)
);

-- The requests waiting for their key, oldest first; and those holding its slots.
CREATE INDEX requests_key_waiting_idx ON requests (tenant_id, concurrency_key, id)
    WHERE status = 'INIT' AND NOT key_slot;
CREATE INDEX requests_key_holders_idx ON requests (tenant_id, concurrency_key, id) WHERE key_slot AND completed_at IS NULL;
CREATE INDEX requests_tags_idx ON requests USING gin (tags) WHERE tags IS NOT NULL;

-- Rows inserted without a rank (by hand, by tests) rank by their insert.
ALTER TABLE outbox ADD COLUMN admit_rank timestamptz NOT NULL DEFAULT now();
CREATE INDEX outbox_ranked_idx ON outbox (tenant_id, admit_rank, id)
    WHERE topic = 'request.accepted' AND dead_at IS NULL AND claimed_until IS NULL;

-- Why a request still INIT has not started: its key is full, its start is scheduled later, it waits
-- for the relays' admission (its tenant's share, the room in flight), or it is admitted and waits
-- for a worker. NULL once it started.
CREATE FUNCTION ackflow_waiting_for(r requests) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.status <> 'INIT' THEN NULL
                WHEN r.admitted_at IS NOT NULL THEN 'worker'
                WHEN NOT r.key_slot THEN 'concurrency_key'
                WHEN r.scheduled_for > now() THEN 'schedule'
                ELSE 'admission' END
$$;

CREATE OR REPLACE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', ackflow_timestamp(r.created_at), 'updated_at', ackflow_timestamp(r.updated_at),
        'completed_at', ackflow_timestamp(r.completed_at))
        || jsonb_strip_nulls(jsonb_build_object('progress', r.progress, 'waiting', r.waiting,
                                                'scheduled_for', ackflow_timestamp(r.scheduled_for),
                                                'expires_at', ackflow_timestamp(r.expires_at),
                                                'waiting_for', ackflow_waiting_for(r),
                                                'concurrency_key', r.concurrency_key,
                                                'priority', r.priority,
                                                'tags', to_jsonb(r.tags)))
$$;

-- A request's accepted row becomes due: at once, or at its scheduled time; ranked by its priority.
CREATE FUNCTION ackflow_make_due(p_request_id uuid) RETURNS void LANGUAGE sql VOLATILE AS $$
    UPDATE outbox o
       SET available_at = greatest(now(), r.scheduled_for),
           admit_rank = greatest(now(), r.scheduled_for) - r.priority_lead,
           payload = o.payload || jsonb_build_object('due_at', ackflow_timestamp(greatest(now(), r.scheduled_for)))
      FROM requests r
     WHERE r.id = p_request_id AND o.request_id = r.id AND o.topic = 'request.accepted'
$$;

-- The end of a request holding its key's slot passes the slot on: to the oldest request waiting for
-- the key (each, while the key's holders are fewer than that request's limit), else the key counts
-- one holder fewer. The slots row is locked first, so an accept of the same key (which locks it too)
-- either counted this holder and left its request waiting, which is then found here, or comes after
-- and finds the slot free. Waiting requests are locked in id order, waiting for a cancel of one to
-- commit rather than skipping it (a skipped request could be left waiting with its key free).
-- An AFTER trigger: it runs once the statement has changed all its rows, so a statement that ends a
-- holder and a waiting request of one key together (the expiry sweep) never has its own rows
-- changed under it, and the waiting one, ended, is not given the slot.
CREATE FUNCTION ackflow_pass_key_slot() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    holders integer;
    next_request record;
BEGIN
    UPDATE concurrency_slots s SET taken = greatest(0, s.taken - 1)
     WHERE s.tenant_id = NEW.tenant_id AND s.key = NEW.concurrency_key
    RETURNING s.taken INTO holders;
    holders := coalesce(holders, 0);
    LOOP
        SELECT r.id, r.concurrency_limit INTO next_request
          FROM requests r
         WHERE r.tenant_id = NEW.tenant_id AND r.concurrency_key = NEW.concurrency_key
           AND r.status = 'INIT' AND NOT r.key_slot
         ORDER BY r.id LIMIT 1
           FOR UPDATE;
        EXIT WHEN NOT FOUND OR holders >= next_request.concurrency_limit;
        UPDATE requests SET key_slot = true WHERE id = next_request.id;
        PERFORM ackflow_make_due(next_request.id);
        holders := holders + 1;
    END LOOP;
    IF holders = 0 THEN
        DELETE FROM concurrency_slots WHERE tenant_id = NEW.tenant_id AND key = NEW.concurrency_key;
    ELSE
        INSERT INTO concurrency_slots (tenant_id, key, taken) VALUES (NEW.tenant_id, NEW.concurrency_key, holders)
        ON CONFLICT (tenant_id, key) DO UPDATE SET taken = EXCLUDED.taken;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER requests_pass_key_slot AFTER UPDATE ON requests
    FOR EACH ROW WHEN (OLD.key_slot AND OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION ackflow_pass_key_slot();

-- The claim, whole (it was spread over migrations 0009, 0013, 0015 and 0018): as there, but each
-- tenant's waiting requests are read by admit_rank (priority, with aging), not by when they became
-- due; each batch member's due_at is its accepted row's (a request that waited for its key became
-- due when it got the slot).
CREATE OR REPLACE FUNCTION ackflow_claim_outbox(p_batch integer, p_max_in_flight bigint, p_lease_seconds float8, p_batch_max integer)
RETURNS TABLE (id bigint, topic text, tenant_id uuid, request_id uuid, event_id bigint, payload jsonb,
               attempts integer, failing_since timestamptz, claimed_until timestamptz)
LANGUAGE plpgsql VOLATILE AS $claim$
#variable_conflict use_column
DECLARE
    claimed_ids bigint[];
BEGIN
    SELECT coalesce(array_agg(c.id), '{}') INTO claimed_ids
      FROM ackflow_claim_outbox(p_batch, p_max_in_flight, p_lease_seconds) c;
    RETURN QUERY
    WITH fresh AS (
        -- Admitted by this claim: admitted_at is this transaction's now().
        SELECT o.id, o.tenant_id, o.request_id, o.payload, o.claimed_until, r.trace_context,
               coalesce(o.payload -> 'due_at', to_jsonb(ackflow_timestamp(greatest(r.created_at, r.scheduled_for)))) AS due_at,
               coalesce(o.payload ->> 'task_queue', '') AS task_queue
          FROM outbox o JOIN requests r ON r.id = o.request_id
         WHERE o.id = ANY (claimed_ids) AND o.topic = 'request.accepted' AND r.admitted_at = now()
    ), numbered AS (
        SELECT f.*, (row_number() OVER (PARTITION BY f.task_queue ORDER BY f.id) - 1) / greatest(1, p_batch_max) AS chunk
          FROM fresh f
    ), batches AS (
        SELECT n.task_queue, n.chunk,
               (array_agg(n.request_id ORDER BY n.id))[1] AS first_request,
               (array_agg(n.tenant_id ORDER BY n.id))[1] AS first_tenant,
               array_agg(n.request_id ORDER BY n.id) AS members,
               CASE WHEN count(*) = 1 THEN 'batch-' || (array_agg(n.request_id))[1]::text
                    ELSE 'batch-' || md5(string_agg(n.request_id::text, ',' ORDER BY n.request_id)) END AS workflow_id,
               jsonb_agg(jsonb_build_object('request_id', n.request_id, 'tenant_id', n.tenant_id,
                                            'kind', n.payload -> 'kind', 'handler', n.payload -> 'handler',
                                            'trace_context', n.trace_context,
                                            'due_at', n.due_at)
                         ORDER BY n.id) AS requests,
               min(n.claimed_until) AS lease
          FROM numbered n
         GROUP BY n.task_queue, n.chunk
    ), replaced AS (
        DELETE FROM outbox o WHERE o.id IN (SELECT n.id FROM numbered n)
    ), assigned AS (
        UPDATE requests r SET workflow_id = b.workflow_id
          FROM numbered n JOIN batches b ON b.task_queue = n.task_queue AND b.chunk = n.chunk
         WHERE r.id = n.request_id
    ), inserted AS (
        INSERT INTO outbox (topic, tenant_id, request_id, request_ids, payload, claimed_until)
        SELECT 'request.batch', b.first_tenant, b.first_request, b.members,
               jsonb_build_object('task_queue', b.task_queue, 'workflow_id', b.workflow_id, 'requests', b.requests),
               b.lease
          FROM batches b
         ORDER BY b.task_queue, b.chunk
        RETURNING outbox.id, outbox.topic, outbox.tenant_id, outbox.request_id, outbox.event_id, outbox.payload,
                  outbox.attempts, outbox.failing_since, outbox.claimed_until
    )
    SELECT o.id, o.topic, o.tenant_id, o.request_id, o.event_id, o.payload, o.attempts, o.failing_since, o.claimed_until
      FROM outbox o
     WHERE o.id = ANY (claimed_ids) AND o.id NOT IN (SELECT n.id FROM numbered n)
    UNION ALL
    SELECT * FROM inserted
    ORDER BY 1;
END;
$claim$;

-- One batch of due rows under a lease of p_lease_seconds, committed at once (the relay dispatches
-- outside any transaction), with each accepted request admitted in the same statement.
-- Up to p_batch rows: first every topic but request.accepted, and accepted rows whose relay died
-- after admitting them (already counted in flight); then requests waiting for admission, shared
-- fairly: p_max_in_flight requests in flight at most (NULL: no limit), counted from
-- requests.admitted_at, every relay included. Each tenant with work in flight or due has a share of
-- p_max_in_flight by its admission_weight (at least one place); a tenant waiting below its share is
-- admitted up to it even when the room is full (another tenant may have borrowed all of it while
-- alone), but never past twice p_max_in_flight in all. The rest of the room goes to the waiting
-- request whose tenant has least in flight for its weight. Tenants are found by a skip scan of
-- outbox_waiting_idx, one probe each for a due row (a tenant with nothing due, only delayed starts
-- or requests waiting for their key, takes no share); each tenant's requests are read by admit_rank
-- (outbox_ranked_idx), only as many as it could be admitted.
-- Claims that admit take turns under a transaction-level advisory lock, taken by the first
-- statement; the claim is the second, and a VOLATILE function's every statement gets a fresh
-- snapshot, so it sees each admission committed before it: two relays never both fill the room.
CREATE OR REPLACE FUNCTION ackflow_claim_outbox(p_batch integer, p_max_in_flight bigint, p_lease_seconds float8)
RETURNS TABLE (id bigint, topic text, tenant_id uuid, request_id uuid, event_id bigint, payload jsonb,
               attempts integer, failing_since timestamptz, claimed_until timestamptz)
LANGUAGE plpgsql VOLATILE AS $claim$
#variable_conflict use_column
BEGIN
    IF p_max_in_flight IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(7411726564);
    END IF;
    RETURN QUERY
    WITH RECURSIVE others AS (
        SELECT id FROM outbox
         WHERE topic <> 'request.accepted' AND dead_at IS NULL AND available_at <= now()
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY id
         LIMIT p_batch
           FOR UPDATE SKIP LOCKED
    ), reclaimed AS (
        SELECT id FROM outbox
         WHERE claimed_until < now() AND topic = 'request.accepted' AND dead_at IS NULL
         ORDER BY claimed_until
         LIMIT greatest(0, p_batch - (SELECT count(*) FROM others))
           FOR UPDATE SKIP LOCKED
    ), waiting_tenants AS (
        (SELECT tenant_id FROM outbox
          WHERE topic = 'request.accepted' AND dead_at IS NULL AND claimed_until IS NULL
          ORDER BY tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT o.tenant_id FROM outbox o
                 WHERE o.topic = 'request.accepted' AND o.dead_at IS NULL AND o.claimed_until IS NULL
                   AND o.tenant_id > t.tenant_id
                 ORDER BY o.tenant_id LIMIT 1)
          FROM waiting_tenants t WHERE t.tenant_id IS NOT NULL
    ), in_flight AS (
        SELECT tenant_id, count(*) AS n FROM requests
         WHERE admitted_at IS NOT NULL AND completed_at IS NULL
         GROUP BY tenant_id
    ), active AS (
        SELECT a.tenant_id, coalesce(f.n, 0) AS n, t.admission_weight AS weight, a.waiting
          FROM (SELECT tenant_id, bool_or(waiting) AS waiting
                  FROM (SELECT w.tenant_id, true AS waiting FROM waiting_tenants w
                         CROSS JOIN LATERAL (  -- one probe of outbox_waiting_idx a tenant, never a join over the outbox
                                SELECT FROM outbox o
                                 WHERE o.tenant_id = w.tenant_id AND o.topic = 'request.accepted'
                                   AND o.dead_at IS NULL AND o.claimed_until IS NULL AND o.available_at <= now()
                                 ORDER BY o.available_at LIMIT 1) due
                         WHERE w.tenant_id IS NOT NULL
                        UNION ALL SELECT tenant_id, false FROM in_flight) x
                 GROUP BY tenant_id) a
          JOIN tenants t ON t.id = a.tenant_id
          LEFT JOIN in_flight f ON f.tenant_id = a.tenant_id
    ), limits AS (
        SELECT coalesce(p_max_in_flight::bigint, 1000000000) AS max_in_flight,
               coalesce((SELECT sum(n) FROM in_flight), 0) AS total,
               greatest(0, coalesce(p_max_in_flight::bigint, 1000000000) - coalesce((SELECT sum(n) FROM in_flight), 0)) AS room,
               (SELECT sum(weight) FROM active) AS total_weight
    ), shares AS (
        SELECT a.tenant_id, a.n, a.weight, greatest(1, floor(l.max_in_flight * a.weight / l.total_weight)) AS share
          FROM active a CROSS JOIN limits l
         WHERE a.waiting
    ), candidates AS (
        SELECT c.id, s.n + c.k <= s.share AS guaranteed, (s.n + c.k)::float8 / s.weight AS virtual_time
          FROM shares s
         CROSS JOIN limits l
         CROSS JOIN LATERAL (
                -- admit_rank <= now() holds for every due row: the bound keeps the scan off the rows of
                -- requests waiting for their key ('infinity') and off most delayed starts.
                SELECT o.id, row_number() OVER (ORDER BY o.admit_rank, o.id) AS k
                  FROM outbox o
                 WHERE o.tenant_id = s.tenant_id AND o.topic = 'request.accepted' AND o.dead_at IS NULL
                   AND o.claimed_until IS NULL AND o.admit_rank <= now() AND o.available_at <= now()
                 ORDER BY o.admit_rank, o.id
                 LIMIT least(p_batch, greatest(0, s.share - s.n) + l.room)) c
    ), chosen AS (
        SELECT id FROM candidates
         ORDER BY guaranteed DESC, virtual_time, id
         LIMIT greatest(0, least(p_batch - (SELECT count(*) FROM others) - (SELECT count(*) FROM reclaimed),
                                 greatest((SELECT room FROM limits),
                                          least((SELECT count(*) FROM candidates WHERE guaranteed),
                                                (SELECT 2 * max_in_flight - total FROM limits)))))
    ), admitted AS (
        -- The conditions again: a row another relay claimed, postponed or dead-lettered since this
        -- statement's snapshot is re-checked here once locked (without admission, claims don't take turns).
        SELECT id FROM outbox
         WHERE id = ANY (ARRAY(SELECT id FROM chosen))
           AND claimed_until IS NULL AND dead_at IS NULL AND available_at <= now()
           FOR UPDATE SKIP LOCKED
    ), claimed AS (
        -- clock_timestamp(), not now(): the lease runs from the claim, not from before a wait for the lock.
        UPDATE outbox o SET claimed_until = clock_timestamp() + make_interval(secs => p_lease_seconds)
         WHERE o.id = ANY (ARRAY(SELECT id FROM others UNION ALL SELECT id FROM reclaimed UNION ALL SELECT id FROM admitted))
        RETURNING o.id, o.topic, o.tenant_id, o.request_id, o.event_id, o.payload, o.attempts, o.failing_since,
                  o.claimed_until
    ), admit AS (
        UPDATE requests r SET admitted_at = now()
          FROM claimed c
         WHERE c.topic = 'request.accepted' AND r.id = c.request_id AND r.admitted_at IS NULL
    )
    SELECT * FROM claimed ORDER BY id;
END;
$claim$;
