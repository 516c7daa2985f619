-- Progress in one unit (issue 24): a job's `progress` is the fraction of it done, in
-- [0, 1], as the segment and export APIs answer it (core/queue.py
-- `progress_fraction`). It held a percentage until now, as a `real`: a fraction needs
-- the double's precision (0.01 as a real reads back 0.0099999998).
--
-- The CHECK keeps the old range for one release: workers of the previous release
-- still write percentages during a roll-out (DEPLOY.md, "Releasing"), and readers
-- clamp what they read to [0, 1]. The next release narrows it to 0-1.
ALTER TABLE jobs ALTER COLUMN progress TYPE double precision;
UPDATE jobs SET progress = progress / 100 WHERE progress > 0;

COMMENT ON COLUMN jobs.progress IS
    'fraction of the job done, 0-1 (a percentage before migration 0008)';
