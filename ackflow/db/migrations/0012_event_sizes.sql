-- Stream replays are paged by bytes as well as rows, so a reconnect from the first event cannot load
-- a thousand 1 MiB results into a gateway at once. The page query sums each event's size as it
-- reads; `pg_column_size` would give the compressed size on disk (a 1 MiB result of repeated text
-- may store as a few KiB), and measuring `data::text` at read time would decompress every candidate
-- row, so the size of `data` as the gateway receives it (its JSON text) is recorded at insert.
-- Events written before this migration have none; the query measures those as it reads them.
ALTER TABLE request_events ADD COLUMN data_bytes integer;

CREATE FUNCTION request_events_measure_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.data_bytes := octet_length(NEW.data::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER request_events_measure_data BEFORE INSERT OR UPDATE OF data ON request_events
    FOR EACH ROW EXECUTE FUNCTION request_events_measure_data();
