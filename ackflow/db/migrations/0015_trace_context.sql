-- Traces (ackflow/tracing.py): the W3C traceparent of the POST that accepted a request, stored with
-- it so that its trace crosses the outbox, Temporal and every restart. NULL when the gateway was not
-- tracing. The accept statement writes it; the relay finds it in each batch member (the claim below,
-- as in migration 0013 but for `trace_context` in each member); the worker reads it with the row its
-- activities read anyway, and the webhook dispatcher with the delivery it claims.
ALTER TABLE requests ADD COLUMN trace_context text;

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
                                            'trace_context', n.trace_context)
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
