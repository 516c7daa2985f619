-- `storyforge jobs list|show` (storyforge/jobs.py): what an operator reads of the job
-- table. Retrying and cancelling are core/lifecycle.py's (core/sql/lifecycle.sql,
-- core/sql/jobs.sql), shared with the API.

-- name: ops_jobs_list
-- $1 kind, $2 status, $3 scene (each NULL: any), $4 at most this many; newest first.
SELECT *
  FROM jobs
 WHERE ($1::text IS NULL OR kind = $1)
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR scene_id = $3)
 ORDER BY created_at DESC, id
 LIMIT $4;

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
