-- pg_notify inside a transaction takes a database-wide lock from pre-commit to the end of the
-- commit's flush, so a NOTIFY in every accept made accepts commit one at a time. Accepts now wake
-- the relay from the gateway after commit, coalesced (see ackflow/db/waker.py); other outbox rows
-- (status changes, written by workers) still notify from the trigger.
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.topic <> 'request.accepted') EXECUTE FUNCTION ackflow_notify_outbox();
