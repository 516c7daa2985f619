-- Scene exports (issue 12): moments, what a ready export measured, and the running
-- export throughput that estimatedTime comes from.

-- A moment is a time range of the scene timeline, rounded to frames (both NULL: the
-- whole scene). `duration` is what the finished MP4 measured.
ALTER TABLE exports
    ADD COLUMN start_s   double precision,
    ADD COLUMN end_s     double precision,
    ADD COLUMN duration  double precision CHECK (duration > 0),
    ADD CONSTRAINT exports_moment CHECK (
        (start_s IS NULL AND end_s IS NULL)
        OR (start_s >= 0 AND end_s > start_s));

-- The API's question: a ready export of this scene version, quality and range?
CREATE INDEX exports_ready ON exports (scene_id, quality, scene_version, ready_at DESC)
    WHERE status = 'ready';
CREATE INDEX exports_job ON exports (job_id) WHERE job_id IS NOT NULL;

-- One running figure per kind of export: seconds of scene exported per second of
-- work, an exponentially weighted mean of the finished jobs (core/exports.py).
CREATE TABLE export_throughput (
    kind        text PRIMARY KEY CHECK (kind IN ('full', 'moment')),
    speed       double precision NOT NULL CHECK (speed > 0),
    samples     bigint NOT NULL DEFAULT 1 CHECK (samples >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
