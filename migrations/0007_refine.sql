-- Playable in seconds, then the best quality per bit (issue 17, workers/jobs/refine.py).
--
-- Jobs get a priority: a worker claims the due job with the highest priority first
-- (core/sql/jobs.sql `job_claim`), so a `refine` (0) never keeps a new upload's
-- `transcode`, an export or any other work (100) waiting.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 100
    CHECK (priority BETWEEN 0 AND 1000);
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_after, created_at)
    WHERE status = 'queued';

-- A published clip's renditions come in generations: 1 is the fast ladder the
-- transcode publishes (the seed's object names), each refinement publishes the next
-- one under new keys (core/layout.py `media_segment_name`). `quality` is what the
-- segment status says: fast until the refined generation is published.
ALTER TABLE segments
    ADD COLUMN generation integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    ADD COLUMN quality text NOT NULL DEFAULT 'fast' CHECK (quality IN ('fast', 'final'));
