-- Nothing creeps (issue 29): history is kept for a retention period and pruned in
-- small batches (core/retention.py), and what /metrics reads no longer grows with it.

-- Counts by status kept incrementally: every change of a job's or a delivery's status
-- appends its delta here, in the changing transaction (triggers below), so a scrape
-- sums a few rows instead of counting the tables. Deltas are appended, never updated
-- in place: concurrent transactions never wait on one counter row (nor deadlock over
-- two of them). The workers fold the deltas into one row per (tbl, kind, status)
-- every few seconds (`status_counts_compact`), so the table stays a few dozen rows.
-- `kind` is '' for webhook deliveries.
CREATE TABLE status_counts (
    tbl     text NOT NULL CHECK (tbl IN ('jobs', 'webhook_deliveries')),
    kind    text NOT NULL,
    status  text NOT NULL,
    n       bigint NOT NULL
);

-- Webhook deliveries (no kind). Inserts and deletes (bulk prunes) are counted per statement from their transition
-- tables; a status change per row, and only when the status changes (a heartbeat
-- does not fire it). TRUNCATE forgets the table's counts.
CREATE FUNCTION count_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM status_counts WHERE tbl = TG_TABLE_NAME;
    ELSIF TG_LEVEL = 'ROW' THEN
        INSERT INTO status_counts (tbl, kind, status, n)
        VALUES (TG_TABLE_NAME, '', OLD.status, -1), (TG_TABLE_NAME, '', NEW.status, 1);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO status_counts (tbl, kind, status, n)
        SELECT TG_TABLE_NAME, '', status, count(*) FROM changed GROUP BY status;
    ELSE
        INSERT INTO status_counts (tbl, kind, status, n)
        SELECT TG_TABLE_NAME, '', status, -count(*) FROM changed GROUP BY status;
    END IF;
    RETURN NULL;
END $$;

-- Jobs carry their kind: the same rules with it.
CREATE FUNCTION count_job_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM status_counts WHERE tbl = 'jobs';
    ELSIF TG_LEVEL = 'ROW' THEN
        INSERT INTO status_counts (tbl, kind, status, n)
        VALUES ('jobs', OLD.kind, OLD.status, -1), ('jobs', NEW.kind, NEW.status, 1);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO status_counts (tbl, kind, status, n)
        SELECT 'jobs', kind, status, count(*) FROM changed GROUP BY kind, status;
    ELSE
        INSERT INTO status_counts (tbl, kind, status, n)
        SELECT 'jobs', kind, status, -count(*) FROM changed GROUP BY kind, status;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_count_inserts AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_deletes AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_changes AFTER UPDATE OF status, kind ON jobs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION count_job_statuses();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION count_job_statuses();

CREATE TRIGGER deliveries_count_inserts AFTER INSERT ON webhook_deliveries
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_statuses();
CREATE TRIGGER deliveries_count_deletes AFTER DELETE ON webhook_deliveries
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION count_statuses();
CREATE TRIGGER deliveries_count_changes AFTER UPDATE OF status ON webhook_deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION count_statuses();
CREATE TRIGGER deliveries_count_truncate AFTER TRUNCATE ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION count_statuses();

-- The rows already there (the triggers above lock both tables against writes until
-- this migration commits, so nothing is counted twice or missed).
INSERT INTO status_counts (tbl, kind, status, n)
SELECT 'jobs', kind, status, count(*) FROM jobs GROUP BY kind, status;
INSERT INTO status_counts (tbl, kind, status, n)
SELECT 'webhook_deliveries', '', status, count(*) FROM webhook_deliveries GROUP BY status;

-- Pruning walks each table from its oldest finished row, so each batch reads only
-- what it deletes (core/sql/retention.sql).
CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled');
CREATE INDEX webhook_events_created ON webhook_events (created_at);
CREATE INDEX uploads_ended ON uploads (expires_at) WHERE status <> 'open';

-- A webhook job finds its delivery by job id (`outbox_delivery_for_job`): without an
-- index that was a scan of every delivery ever made.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id) WHERE job_id IS NOT NULL;
