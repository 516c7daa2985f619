-- The webhook outbox (core/outbox.py): events written in the transaction of the
-- change they report, one delivery per event and endpoint, delivered in order per
-- scene and endpoint by `webhook` jobs.

-- name: outbox_next_seq
-- The scene's next event number. The upsert keeps the counter row locked until the
-- caller's transaction ends, so one scene's events are numbered in commit order.
INSERT INTO webhook_scene_seq (scene_id, seq) VALUES ($1, 1)
ON CONFLICT (scene_id) DO UPDATE SET seq = webhook_scene_seq.seq + 1
RETURNING seq;

-- name: outbox_lock_scene
-- The same lock, taken by a finishing delivery before it queues the next one.
SELECT seq FROM webhook_scene_seq WHERE scene_id = $1 FOR UPDATE;

-- name: outbox_insert_event
INSERT INTO webhook_events (id, type, scene_id, seq, payload)
VALUES ($1, $2, $3, $4, ($5::text)::jsonb)
RETURNING created_at;

-- name: outbox_unfinished_before
-- Is an earlier event of this scene still on its way to this endpoint?
SELECT EXISTS (
    SELECT 1 FROM webhook_deliveries
    WHERE scene_id = $1 AND endpoint = $2 AND seq < $3 AND status IN ('waiting', 'queued'));

-- name: outbox_insert_delivery
INSERT INTO webhook_deliveries (event_id, endpoint, scene_id, seq, status, job_id)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: outbox_delivery_for_job
SELECT d.event_id, d.endpoint, d.scene_id, d.seq, d.status, e.type, e.payload::text AS payload,
       e.created_at
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.job_id = $1;

-- name: outbox_finish_delivery
UPDATE webhook_deliveries SET status = $3, finished_at = now()
WHERE event_id = $1 AND endpoint = $2 AND status = 'queued'
RETURNING scene_id;

-- name: outbox_next_waiting
SELECT event_id FROM webhook_deliveries
WHERE scene_id = $1 AND endpoint = $2 AND status = 'waiting'
ORDER BY seq LIMIT 1;

-- name: outbox_queue_delivery
UPDATE webhook_deliveries SET status = 'queued', job_id = $3
WHERE event_id = $1 AND endpoint = $2 AND status = 'waiting';

-- name: outbox_delivery_counts
-- For /metrics: deliveries by status, from the deltas of migration 0009 (like
-- `job_counts`).
SELECT status, sum(n)::bigint AS n
  FROM status_counts
 WHERE tbl = 'webhook_deliveries'
 GROUP BY status;

-- name: outbox_oldest_pending
-- For /metrics: seconds since the event of the oldest delivery not yet delivered or
-- dead (waiting or queued) was written; 0 when none is (the partial index of
-- unfinished deliveries keeps this cheap however many have been delivered).
SELECT coalesce(extract(epoch FROM now() - min(e.created_at)), 0)::float8
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.status IN ('waiting', 'queued');

-- name: outbox_scene_events
SELECT id, type, seq, payload::text AS payload, created_at
FROM webhook_events WHERE scene_id = $1 ORDER BY seq;
