-- Batch submission (issue 16): POST /v1/requests/batch accepts up to 1,000 requests in one
-- transaction; each accepted request names its batch, which GET /v1/batches/{id} counts by status.
-- A batch is pruned with the last of its requests (retention: prune_submitted_batches).
CREATE TABLE submitted_batches (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    size       integer     NOT NULL,  -- items submitted
    accepted   integer     NOT NULL,  -- items accepted as requests (the others answered with a problem)
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX submitted_batches_created_idx ON submitted_batches (created_at);

ALTER TABLE requests ADD COLUMN submitted_batch_id uuid;
CREATE INDEX requests_submitted_batch_idx ON requests (submitted_batch_id, status) WHERE submitted_batch_id IS NOT NULL;
