-- A scene's life after publication (core/lifecycle.py): deleting scenes, removing
-- clips, retrying and cancelling jobs. Changes that readers must see at once notify
-- core.listen.CHANNEL (payload: the scene id) when they commit. Lock order, as a
-- publish takes it: job rows (core/sql/jobs.sql), then the segment or export, then
-- the scene.

-- name: scene_lock
-- The scene row, deleted or not, locked for the caller's transaction.
SELECT id, deleted_at FROM scenes WHERE id = $1 FOR UPDATE;

-- name: scene_hide
-- A deleted scene is hidden at once: every read query wants deleted_at IS NULL.
-- Its version is bumped too (documents built for the old one are never answered).
WITH hidden AS (
    UPDATE scenes SET deleted_at = now(), version = version + 1, updated_at = now()
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING id)
SELECT hidden.id FROM hidden, pg_notify($2, hidden.id);

-- name: scene_deleted_state
-- For the deleting job: does the scene row still exist, and is it deleted?
SELECT deleted_at IS NOT NULL AS deleted FROM scenes WHERE id = $1;

-- name: scene_purge
-- The last step of a deletion: the scene's rows. Segments, renditions and exports go
-- with it (ON DELETE CASCADE); job rows stay as history.
DELETE FROM scenes WHERE id = $1 AND deleted_at IS NOT NULL RETURNING id;

-- name: segment_lock
SELECT s.id, s.scene_id, s.sequence, s.status, s.removed_at,
       (sc.deleted_at IS NULL) AS scene_live
FROM segments s JOIN scenes sc ON sc.id = s.scene_id
WHERE s.id = $1
FOR UPDATE OF s;

-- name: segment_unpublish
-- A ready clip leaves its scene: 'removed' (its row and files stay for the grace
-- period, its sequence is free), the scene's version bumped, readers notified ($2).
WITH removed AS (
    UPDATE segments SET status = 'removed', removed_at = now()
    WHERE id = $1 AND status = 'ready'
    RETURNING scene_id, removed_at),
bumped AS (
    UPDATE scenes SET version = version + 1, updated_at = now()
    WHERE id = (SELECT scene_id FROM removed)
    RETURNING id)
SELECT removed.removed_at
  FROM removed, bumped, pg_notify($2, bumped.id);

-- name: segment_drop_unpublished
-- A clip that never played (processing, failed) is removed at once: its sequence is
-- free from the commit on.
DELETE FROM segments WHERE id = $1 AND status IN ('processing', 'failed') RETURNING id;

-- name: segment_purge_removed
-- After the grace period: the removed clip's rows (renditions cascade).
DELETE FROM segments WHERE id = $1 AND status = 'removed' RETURNING id;

-- name: segment_profiles
SELECT profile FROM renditions WHERE segment_id = $1 ORDER BY profile;

-- name: segment_retry
-- A failed clip goes back to processing when its transcode is queued again.
UPDATE segments SET status = 'processing', error = NULL
WHERE id = $1 AND status = 'failed'
RETURNING id;

-- name: export_retry
-- A failed export goes back to processing when its job ($1) is queued again.
UPDATE exports
   SET status = 'processing', error = NULL
 WHERE job_id = $1
   AND status = 'failed'
RETURNING id;

-- name: gc_scenes
-- storyforge gc (core/gc.py): which of these ids have a row. A deleted scene
-- whose job has not finished still has its row: its objects are that job's.
SELECT id, NULL::text AS scene_id FROM scenes WHERE id = ANY($1::text[]);

-- name: gc_segments
SELECT id, scene_id FROM segments WHERE id = ANY($1::text[]);

-- name: gc_users
SELECT id, NULL::text AS scene_id FROM users WHERE id = ANY($1::text[]);

-- name: gc_jobs
SELECT id, NULL::text AS scene_id FROM jobs WHERE id = ANY($1::text[]);
