-- Scene exports (seed §8, issue 12): the named queries of core/exports.py. The API
-- asks for the newest export of a scene version, quality and range (ready, or failed
-- for good: issue 24) or creates one with its job (in one transaction, the job's
-- dedupe key settling races); the export job reads its row, then publishes or fails
-- it inside the transaction that holds its lease fence.

-- name: export_find_latest
-- The newest export of exactly this scene version, quality and range, with its job's
-- outcome and whether it became ready less than $6 seconds ago.
-- $1 scene, $2 quality, $3 scene version, $4 start, $5 end (NULL: whole scene),
-- $6 maximum age in seconds.
SELECT e.*, j.status AS job_status, j.last_error AS job_error,
       (e.ready_at > now() - make_interval(secs => $6::float8)) AS fresh
  FROM exports e
  LEFT JOIN jobs j ON j.id = e.job_id
 WHERE e.scene_id = $1
   AND e.quality = $2
   AND e.scene_version = $3
   AND e.start_s IS NOT DISTINCT FROM $4::float8
   AND e.end_s IS NOT DISTINCT FROM $5::float8
 ORDER BY e.created_at DESC
 LIMIT 1;

-- name: export_insert
INSERT INTO exports (id, scene_id, quality, scene_version, job_id, start_s, end_s)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: export_by_job
SELECT *
  FROM exports
 WHERE job_id = $1
 ORDER BY created_at
 LIMIT 1;

-- name: export_status
-- An export with its scene and its job: a job that ended failed or dead leaves the
-- export failed even if no worker could say so (its lease expired for the last time).
SELECT e.*, s.title, s.version AS scene_current_version, (s.deleted_at IS NULL) AS scene_live,
       j.status AS job_status, j.progress AS job_progress, j.last_error AS job_error,
       j.attempts AS job_attempts
  FROM exports e
  JOIN scenes s ON s.id = e.scene_id
  LEFT JOIN jobs j ON j.id = e.job_id
 WHERE e.id = $1;

-- name: export_served
-- What /e/{sceneId}/{exportId}/{file} needs: a ready export of a live scene.
SELECT e.id, e.quality, e.start_s, e.end_s, e.captions, s.title
  FROM exports e
  JOIN scenes s ON s.id = e.scene_id AND s.deleted_at IS NULL
 WHERE e.id = $1
   AND e.scene_id = $2
   AND e.status = 'ready';

-- name: export_mark_ready
-- In the transaction holding the export job's lease fence. $4: the languages of its
-- captions sidecars.
UPDATE exports
   SET status = 'ready', size = $2, duration = $3, ready_at = now(), error = NULL,
       captions = $4
 WHERE id = $1
   AND status = 'processing'
RETURNING *;

-- name: export_mark_failed
UPDATE exports
   SET status = 'failed', error = $2
 WHERE id = $1
   AND status = 'processing'
RETURNING *;

-- name: export_speeds
SELECT kind, speed
  FROM export_throughput;

-- name: export_record_speed
-- $1 kind, $2 the finished job's speed, $3 its weight: an exponentially weighted
-- mean, updated in one statement so concurrent jobs never lose each other's sample.
INSERT INTO export_throughput AS t (kind, speed)
VALUES ($1, $2)
    ON CONFLICT (kind) DO UPDATE
   SET speed = t.speed * (1 - $3::float8) + EXCLUDED.speed * $3::float8,
       samples = t.samples + 1,
       updated_at = now()
RETURNING speed;
