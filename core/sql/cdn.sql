-- CDN invalidation requests, counted by backend and outcome (core/cdn.py).

-- name: cdn_count
-- $1 backend, $2 outcome, $3 requests, $4 paths: added to the running totals.
INSERT INTO cdn_invalidation_counts (backend, outcome, requests, paths)
VALUES ($1, $2, $3, $4)
ON CONFLICT (backend, outcome) DO UPDATE
   SET requests = cdn_invalidation_counts.requests + EXCLUDED.requests,
       paths = cdn_invalidation_counts.paths + EXCLUDED.paths;

-- name: cdn_counts
SELECT backend, outcome, requests, paths
  FROM cdn_invalidation_counts;
