-- The relay's claim took "every row of another topic than request.accepted" with a sequential scan
-- of the whole outbox, so each claim cost time in proportion to the backlog waiting for admission
-- (1.5 ms at 10,000 rows, on every wake-up). Each half of the claim now has its own partial index,
-- in the id order it reads; the topic is spelt out because a partial index only serves a query whose
-- WHERE clause repeats its predicate.
CREATE INDEX outbox_admitted_idx ON outbox (id) WHERE topic = 'request.accepted';
CREATE INDEX outbox_unadmitted_idx ON outbox (id) WHERE topic <> 'request.accepted';
DROP INDEX outbox_available_idx;
