-- Delayed start (issue 16): `run_at` / `delay_seconds` on POST /v1/requests. The request is accepted
-- at once (INIT, its accepted event) with `scheduled_for`, and its outbox row is not due before then
-- (`available_at`, which the claim already honours: nothing starts it early, on any relay). Every
-- event's state shows `scheduled_for` when the request has one.
ALTER TABLE requests ADD COLUMN scheduled_for timestamptz;

CREATE OR REPLACE FUNCTION ackflow_request_state(r requests) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'kind', r.kind, 'status', r.status, 'version', r.version,
        'result', r.result, 'error', r.error,
        'created_at', ackflow_timestamp(r.created_at), 'updated_at', ackflow_timestamp(r.updated_at),
        'completed_at', ackflow_timestamp(r.completed_at))
        || jsonb_strip_nulls(jsonb_build_object('progress', r.progress, 'waiting', r.waiting,
                                                'scheduled_for', ackflow_timestamp(r.scheduled_for)))
$$;

-- The claim as in migration 0015, each batch member also carrying `due_at`, when it could first
-- start (its scheduled time, else its accept): the relay's lag runs from there, so a delay asked for
-- never reads as lag (outbox_cdc/lag.py).
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
               ackflow_timestamp(greatest(r.created_at, r.scheduled_for)) AS due_at,
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

-- The first claim step as in migration 0009, but a tenant whose accepted rows are none of them due
-- yet (delayed starts) is not waiting: it takes no share of admission from the tenants that are.
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
                SELECT o.id, row_number() OVER (ORDER BY o.available_at, o.id) AS k
                  FROM outbox o
                 WHERE o.tenant_id = s.tenant_id AND o.topic = 'request.accepted' AND o.dead_at IS NULL
                   AND o.claimed_until IS NULL AND o.available_at <= now()
                 ORDER BY o.available_at, o.id
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
