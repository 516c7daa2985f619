-- `storyforge jobs` (storyforge/jobs.py): what an operator reads and changes in the
-- job table by hand. Lock order as everywhere else: the job row first, then the
-- segment, export or delivery it works for (a publish takes job, segment, scene).

-- name: ops_jobs_list
-- $1 kind, $2 status, $3 scene (each NULL: any), $4 at most this many; newest first.
SELECT *
  FROM jobs
 WHERE ($1::text IS NULL OR kind = $1)
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR scene_id = $3)
 ORDER BY created_at DESC, id
 LIMIT $4;

-- name: ops_job_lock
-- Inside the operator's transaction: the job row, locked until it commits.
SELECT *
  FROM jobs
 WHERE id = $1
   FOR UPDATE;

-- name: ops_job_cancel
-- $2 the reason. Queued, failed or running -> cancelled. A running job keeps its
-- lease token (as core.queue.cancel does): every fenced write of its worker
-- (heartbeat, progress, publish, complete) wants `status = 'running'` and fails from
-- now on, so the worker stops and lets go; nothing it made is published.
UPDATE jobs
   SET status = 'cancelled',
       last_error = $2,
       finished_at = now(),
       updated_at = now()
 WHERE id = $1
   AND status IN ('queued', 'failed', 'running')
RETURNING *;

-- name: ops_export_retry
-- A failed export whose job an operator queued again is processing again.
UPDATE exports
   SET status = 'processing', error = NULL
 WHERE job_id = $1
   AND status = 'failed'
RETURNING id;

-- name: ops_job_subject
-- What a job works for, for `jobs show`: its segment's and export's status and
-- error, its webhook delivery's endpoint and status (each NULL when none).
SELECT (SELECT s.status FROM segments s WHERE s.id = j.segment_id) AS segment_status,
       (SELECT s.error FROM segments s WHERE s.id = j.segment_id) AS segment_error,
       (SELECT e.id FROM exports e WHERE e.job_id = j.id ORDER BY e.created_at LIMIT 1)
           AS export_id,
       (SELECT e.status FROM exports e WHERE e.job_id = j.id ORDER BY e.created_at LIMIT 1)
           AS export_status,
       (SELECT d.endpoint FROM webhook_deliveries d WHERE d.job_id = j.id) AS delivery_endpoint,
       (SELECT d.status FROM webhook_deliveries d WHERE d.job_id = j.id) AS delivery_status
  FROM jobs j
 WHERE j.id = $1;
