-- Batched execution: the relay starts one workflow (ProcessBatchWorkflow) for the accepted requests
-- of one task queue that it claims together, instead of one workflow per request.
--
-- A batch is formed in the claim itself, in the same transaction that admits its requests: their
-- `request.accepted` rows are replaced by one `request.batch` row that lists them (payload
-- `requests`, and `request_ids` for lookups), and each request records the batch's workflow id
-- (`requests.workflow_id`). The workflow id is derived from the membership, so a relay killed after
-- starting the workflow and before settling the row leaves a row whose next dispatch finds that run
-- and starts nothing. Membership is fixed once, durably, before any start.

-- The workflow a request runs in. NULL: accepted before batches, in its own ProcessRequestWorkflow
-- (`request-<id>`).
ALTER TABLE requests ADD COLUMN workflow_id text;

-- The members of a `request.batch` row (its request_id is the first of them).
ALTER TABLE outbox ADD COLUMN request_ids uuid[];
CREATE INDEX outbox_batch_members_idx ON outbox USING gin (request_ids) WHERE topic = 'request.batch';

-- A batch row is written by a relay that holds it under its lease already: no other relay needs waking.
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.topic NOT IN ('request.accepted', 'request.batch')) EXECUTE FUNCTION ackflow_notify_outbox();

-- The claim with batches: ackflow_claim_outbox(p_batch, p_max_in_flight, p_lease_seconds, p_batch_max).
-- First the claim of migration 0009 (fair admission, leases), then, in a second statement that sees
-- it, the requests it admitted now are grouped by task queue into batches of at most p_batch_max
-- (oldest first): each batch's accepted rows are deleted and one `request.batch` row inserted in
-- their place, under the same lease, and each member's requests.workflow_id is set. Returned: the
-- claimed rows, with batch rows in place of the accepted rows they replaced.
-- Accepted rows admitted by an earlier claim (a relay that died before dispatching them, perhaps an
-- older relay that starts one ProcessRequestWorkflow a request) are not batched: such a relay may
-- have started `request-<id>` already, and a batch of it would be a second run. They are returned as
-- they are and started as before.
-- Workflow ids: `batch-<request id>` for a batch of one, else `batch-` and the md5 of the members'
-- sorted ids.
CREATE FUNCTION ackflow_claim_outbox(p_batch integer, p_max_in_flight bigint, p_lease_seconds float8, p_batch_max integer)
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
        SELECT o.id, o.tenant_id, o.request_id, o.payload, o.claimed_until,
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
                                            'kind', n.payload -> 'kind', 'handler', n.payload -> 'handler')
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
