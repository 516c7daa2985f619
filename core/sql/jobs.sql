-- The job queue (DESIGN.md "Jobs"): the named queries of core/queue.py, which the
-- upload API (enqueue) and the workers (claim, heartbeat, fenced writes) call.
--
-- Every write a worker makes to a job it runs is fenced: `id AND lease_token AND
-- status = 'running'`. Zero rows back means the lease was lost (expired and
-- re-queued, or handed to another worker); the caller must not touch the job.
-- `errors` gets one entry per failed attempt: {"attempt", "at", "error"}.

-- name: job_enqueue
-- $1 id, $2 kind, $3 payload (JSON text), $4 max_attempts, $5 dedupe_key,
-- $6 scene_id, $7 segment_id, $8 the notification channel, $9 seconds before it is
-- due, $10 its priority (higher first). No row back: a queued/running job holds $5.
-- A new job notifies $8 (payload: its kind), delivered when the caller's transaction
-- commits.
WITH job AS (
    INSERT INTO jobs (id, kind, payload, max_attempts, dedupe_key, scene_id, segment_id,
                      run_after, priority)
    VALUES ($1, $2, ($3::text)::jsonb, $4, $5, $6, $7,
            now() + make_interval(secs => $9::float8), $10)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
    DO NOTHING
    RETURNING *)
SELECT job.*
  FROM job, pg_notify($8, job.kind);

-- name: job_get_in_flight_by_dedupe_key
SELECT *
  FROM jobs
 WHERE dedupe_key = $1
   AND status IN ('queued', 'running');

-- name: job_claim
-- $1 lease_token, $2 lease seconds, $3 worker name, $4 kinds (NULL: any kind).
-- One statement, run in autocommit: the lease is committed before any work starts.
-- The highest priority first (migration 0007: a `refine` waits for everything else),
-- then the oldest due.
UPDATE jobs
   SET status = 'running',
       lease_token = $1,
       lease_expires_at = now() + make_interval(secs => $2::float8),
       attempts = attempts + 1,
       worker = $3,
       progress = 0,
       updated_at = now()
 WHERE id = (
        SELECT id
          FROM jobs
         WHERE status = 'queued'
           AND run_after <= now()
           AND ($4::text[] IS NULL OR kind = ANY ($4::text[]))
         ORDER BY priority DESC, run_after, created_at
         LIMIT 1
           FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: job_heartbeat
-- $1 id, $2 lease_token, $3 lease seconds, $4 progress (NULL: unchanged).
UPDATE jobs
   SET lease_expires_at = now() + make_interval(secs => $3::float8),
       progress = coalesce($4::float8, progress),
       updated_at = now()
 WHERE id = $1
   AND lease_token = $2
   AND status = 'running'
RETURNING lease_expires_at;

-- name: job_lock_lease
-- Inside a caller's transaction: lock our running job row so nothing (reaper,
-- another worker) can take the job until that transaction ends.
SELECT id
  FROM jobs
 WHERE id = $1
   AND lease_token = $2
   AND status = 'running'
   FOR UPDATE;

-- name: job_complete
UPDATE jobs
   SET status = 'succeeded',
       progress = 1,
       finished_at = now(),
       lease_token = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE id = $1
   AND lease_token = $2
   AND status = 'running'
RETURNING *;

-- name: job_finish_with_error
-- $3 error, $4 the status it ends in: `failed` (the readable reason of bad input; no
-- retry) or `dead` (it gives up for good with attempts left, a webhook past its retry
-- window). The error is kept with the others.
UPDATE jobs
   SET status = $4::text,
       last_error = $3,
       errors = errors || jsonb_build_array(
           jsonb_build_object('attempt', attempts, 'at', now(), 'error', $3::text)),
       finished_at = now(),
       lease_token = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE id = $1
   AND lease_token = $2
   AND status = 'running'
RETURNING *;

-- name: job_retry_or_dead
-- $3 error, $4 backoff seconds (computed by the caller). Attempts left: queued
-- again after the backoff; none left: dead. Either way the error is kept.
UPDATE jobs
   SET status = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
       run_after = CASE WHEN attempts < max_attempts
                        THEN now() + make_interval(secs => $4::float8)
                        ELSE run_after END,
       finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END,
       last_error = $3,
       errors = errors || jsonb_build_array(
           jsonb_build_object('attempt', attempts, 'at', now(), 'error', $3::text)),
       lease_token = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE id = $1
   AND lease_token = $2
   AND status = 'running'
RETURNING *;

-- name: job_requeue_expired
-- Any worker: running jobs whose lease expired (their worker is gone) are queued
-- again, or dead when they have used all their attempts. $1 the notification
-- channel: each requeued job notifies it with its kind (a dead one wakes a worker
-- for nothing, which costs one empty claim).
WITH requeued AS (
    UPDATE jobs
       SET status = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
           run_after = now(),
           finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END,
           last_error = 'lease expired (worker lost)',
           errors = errors || jsonb_build_array(
               jsonb_build_object('attempt', attempts, 'at', now(),
                                  'error', 'lease expired (worker lost)')),
           lease_token = NULL,
           lease_expires_at = NULL,
           updated_at = now()
     WHERE status = 'running'
       AND lease_expires_at < now()
       AND id IN (
            SELECT id
              FROM jobs
             WHERE status = 'running'
               AND lease_expires_at < now()
               FOR UPDATE SKIP LOCKED)
    RETURNING *)
SELECT requeued.*
  FROM requeued, pg_notify($1, requeued.kind);

-- name: job_requeue_uncounted
-- Our running job queued again and the attempt not counted: handed back on shutdown
-- (due now, $5 the notification channel, told the job's kind so another worker takes
-- it now) or its handler's work continuing later (a clip's objects outlive its removal
-- by a grace period; $5 NULL: nobody is told). Due in $3 seconds, with $4 (a JSON
-- object, `{}` for nothing) merged into its payload.
WITH requeued AS (
    UPDATE jobs
       SET status = 'queued',
           attempts = greatest(attempts - 1, 0),
           run_after = now() + make_interval(secs => $3::float8),
           payload = payload || ($4::text)::jsonb,
           progress = 0,
           lease_token = NULL,
           lease_expires_at = NULL,
           updated_at = now()
     WHERE id = $1
       AND lease_token = $2
       AND status = 'running'
    RETURNING *)
SELECT requeued.*
  FROM requeued
  LEFT JOIN LATERAL (SELECT pg_notify($5::text, requeued.kind) WHERE $5::text IS NOT NULL) AS told
    ON true;

-- name: job_get
SELECT *
  FROM jobs
 WHERE id = $1;

-- name: job_counts
-- For /metrics: how many jobs of each kind are in each status, from the deltas the
-- triggers of migration 0009 append (a few dozen rows once folded: O(1) in the
-- table's size).
SELECT kind, status, sum(n)::bigint AS n
  FROM status_counts
 WHERE tbl = 'jobs'
 GROUP BY kind, status;

-- name: oldest_due_jobs
-- For /metrics: per kind, seconds since the oldest queued job became due (how long
-- work has been waiting for a worker).
SELECT kind, extract(epoch FROM now() - min(run_after))::float8 AS age
  FROM jobs
 WHERE status = 'queued' AND run_after <= now()
 GROUP BY kind;

-- name: job_cancel
-- The queued and running jobs of scene $1 or of segment $2 (either may be NULL)
-- become `cancelled`, except delete_scene jobs; $3 the reason. A running job keeps
-- its lease token, so its fenced writes (heartbeat, publish, complete) fail from now
-- on, and `job_holders` sees its worker until it lets go or the lease expires.
UPDATE jobs
   SET status = 'cancelled',
       last_error = $3,
       finished_at = now(),
       updated_at = now()
 WHERE status IN ('queued', 'running')
   AND kind <> 'delete_scene'
   AND (scene_id = $1::text OR segment_id = $2::text)
RETURNING *;

-- name: job_let_go
-- The worker of a cancelled job has stopped writing: it gives up the lease.
UPDATE jobs
   SET lease_token = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE id = $1
   AND lease_token = $2
   AND status = 'cancelled'
RETURNING id;

-- name: job_holders
-- Cancelled jobs of scene $1 or segment $2 whose worker may still be writing: it
-- has not let go and its lease has not expired.
SELECT count(*)::int
  FROM jobs
 WHERE status = 'cancelled'
   AND lease_token IS NOT NULL
   AND lease_expires_at > now()
   AND (scene_id = $1::text OR segment_id = $2::text);

-- name: job_ids_of
-- Every job of scene $1 or segment $2 but $3: whose internal objects
-- (jobs/{id}/...) go when the scene or the clip does.
SELECT id
  FROM jobs
 WHERE (scene_id = $1::text OR segment_id = $2::text)
   AND id <> $3
 ORDER BY id;

-- name: job_latest
-- The newest job of kind $2 for segment $1.
SELECT *
  FROM jobs
 WHERE segment_id = $1
   AND kind = $2
 ORDER BY created_at DESC
 LIMIT 1;

-- name: job_lock
-- Inside a caller's transaction (core/lifecycle.py retrying or cancelling one job):
-- the job row, whatever its status, locked until that transaction ends. It is the
-- first lock such a transaction takes, as a publish takes its lease fence first
-- (job, then segment, export or delivery, then scene).
SELECT *
  FROM jobs
 WHERE id = $1
   FOR UPDATE;

-- name: job_lock_latest
-- The same for the newest job of kind $2 of segment $1 (the clip's retry).
SELECT *
  FROM jobs
 WHERE segment_id = $1
   AND kind = $2
 ORDER BY created_at DESC
 LIMIT 1
   FOR UPDATE;

-- name: job_lock_latest_of_scene
-- The same for the newest job of kind $2 of scene $1 (a scene deleted again).
SELECT *
  FROM jobs
 WHERE scene_id = $1
   AND kind = $2
 ORDER BY created_at DESC
 LIMIT 1
   FOR UPDATE;

-- name: job_cancel_one
-- One queued, running or failed job becomes `cancelled` (an operator's cancel), $2
-- the reason. A running job keeps its lease token, as with `job_cancel`: every fenced
-- write of its worker wants `status = 'running'` and fails from now on, so the worker
-- stops and lets go; nothing it made is published.
UPDATE jobs
   SET status = 'cancelled',
       last_error = $2,
       finished_at = now(),
       updated_at = now()
 WHERE id = $1
   AND status IN ('queued', 'running', 'failed')
RETURNING *;

-- name: job_requeue_finished
-- A failed or dead job queued again with a fresh attempt budget (its errors kept);
-- $2 the notification channel.
WITH requeued AS (
    UPDATE jobs
       SET status = 'queued',
           attempts = 0,
           run_after = now(),
           progress = 0,
           finished_at = NULL,
           lease_token = NULL,
           lease_expires_at = NULL,
           updated_at = now()
     WHERE id = $1
       AND status IN ('failed', 'dead')
    RETURNING *)
SELECT requeued.*
  FROM requeued, pg_notify($2, requeued.kind);

-- name: job_lock_in_flight
-- Inside a caller's transaction, before it touches the segment or scene rows: lock
-- the queued and running jobs of scene $1 or segment $2, in the order a publishing
-- transaction takes its locks (job, segment, scene), so the two cannot deadlock.
SELECT id
  FROM jobs
 WHERE status IN ('queued', 'running')
   AND (scene_id = $1::text OR segment_id = $2::text)
 ORDER BY id
   FOR UPDATE;

-- name: job_unheld
-- Of the job ids $1, those of this database that no worker may still be working on:
-- no lease, or an expired one. A worker removes their temporary directories (ids of
-- other databases sharing the machine's temporary directory are not returned).
SELECT id
  FROM jobs
 WHERE id = ANY ($1::text[])
   AND (lease_token IS NULL OR lease_expires_at <= now());
