-- Retention (core/retention.py, issue 29): history older than its retention period
-- is deleted in small batches, each one short autocommit statement that skips rows
-- another transaction holds, walking the partial indexes of migration 0009 from the
-- oldest row. $1 the retention in seconds, $2 the batch size.

-- name: prune_jobs
-- Finished jobs (succeeded, failed, dead, cancelled) finished more than $1 seconds
-- ago, except a cancelled one whose worker may still hold it and the job of an export
-- still `processing` (its status reads the job's outcome: core/sql/exports.sql).
-- Their internal objects (jobs/{id}/) become orphans for `storyforge gc`.
DELETE FROM jobs
 WHERE id IN (
        SELECT j.id
          FROM jobs j
         WHERE j.status IN ('succeeded', 'failed', 'dead', 'cancelled')
           AND j.finished_at < now() - make_interval(secs => $1::float8)
           AND (j.lease_token IS NULL OR j.lease_expires_at < now())
           AND NOT EXISTS (SELECT 1 FROM exports x
                            WHERE x.job_id = j.id AND x.status = 'processing')
         ORDER BY j.finished_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED);

-- name: prune_events
-- Webhook events written more than $1 seconds ago whose deliveries have all ended
-- (delivered or dead), with their deliveries (ON DELETE CASCADE).
DELETE FROM webhook_events
 WHERE id IN (
        SELECT e.id
          FROM webhook_events e
         WHERE e.created_at < now() - make_interval(secs => $1::float8)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                            WHERE d.event_id = e.id AND d.status IN ('waiting', 'queued'))
         ORDER BY e.created_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED);

-- name: prune_uploads
-- tus uploads that ended (completed, failed, terminated, expired) and expired more
-- than $1 seconds ago: their `expire_upload` job removed their bytes a minute after
-- expiry. An open one stays until that job ends it.
DELETE FROM uploads
 WHERE id IN (
        SELECT id
          FROM uploads
         WHERE status <> 'open'
           AND expires_at < now() - make_interval(secs => $1::float8)
         ORDER BY expires_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED);

-- name: status_counts_compact
-- Fold the deltas of `status_counts` into one row per table, kind and status (zeros
-- dropped). Rows appended meanwhile are not in this statement's snapshot and stay;
-- a concurrent fold's rows are skipped once it has deleted them.
WITH folded AS (
    DELETE FROM status_counts RETURNING tbl, kind, status, n)
INSERT INTO status_counts (tbl, kind, status, n)
SELECT tbl, kind, status, sum(n)
  FROM folded
 GROUP BY tbl, kind, status
HAVING sum(n) <> 0;
