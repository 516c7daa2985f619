-- A scene's whole life (issue 13): deleting scenes, removing clips, cancelling their
-- jobs, and the CDN invalidations that follow.

-- jobs: the two lifecycle kinds of DESIGN.md "Jobs", and `cancelled`: a job whose
-- scene was deleted or whose clip was removed. A running job keeps its lease token
-- when cancelled, until its worker lets go (core.queue.let_go) or the lease expires,
-- so the deleting job can wait until nobody still writes under the scene.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('transcode', 'export', 'delete_scene', 'remove_segment'));
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled'));
-- cancelling a scene's jobs, listing the jobs whose internal objects a deletion removes
CREATE INDEX jobs_scene ON jobs (scene_id) WHERE scene_id IS NOT NULL;

-- segments: `removed` is a published clip that left its scene. Its row (and its
-- files) stay for the grace period so players holding the previous playlist keep
-- playing; its sequence is free at once (a replacement may take it).
ALTER TABLE segments DROP CONSTRAINT segments_status_check;
ALTER TABLE segments ADD CONSTRAINT segments_status_check
    CHECK (status IN ('processing', 'ready', 'failed', 'removed'));
ALTER TABLE segments ADD COLUMN removed_at timestamptz;
ALTER TABLE segments DROP CONSTRAINT segments_scene_sequence;
CREATE UNIQUE INDEX segments_scene_sequence ON segments (scene_id, sequence)
    WHERE status <> 'removed';

-- CDN invalidation requests sent by any process, by backend and outcome; only ever
-- incremented, so /metrics exposes them as counters.
CREATE TABLE cdn_invalidation_counts (
    backend   text NOT NULL,
    outcome   text NOT NULL,
    requests  bigint NOT NULL DEFAULT 0,
    paths     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (backend, outcome)
);
