-- tus uploads (core/uploads.py). Every write during a request is fenced by the
-- request's lease on the row: `id AND lock_token AND status = 'open'`; no row back
-- means the lease was lost (expired and taken by another request) or the upload ended.

-- name: upload_insert
INSERT INTO uploads (id, scene_id, contributor_id, sequence, filename, content_type,
                     metadata, length, segment_id, job_id, multipart_id, part_size,
                     expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
        now() + make_interval(secs => $13::float8))
RETURNING *;

-- name: upload_get
SELECT * FROM uploads WHERE id = $1;

-- name: upload_claim
-- $2 lease token, $3 lease seconds, $4 the offset the request starts at (NULL: any),
-- $5 true to take an upload past its expiry (the expiry job does).
-- The request also gets the next part number (next_part - 1 of the row returned).
UPDATE uploads
   SET lock_token = $2,
       lock_expires_at = now() + make_interval(secs => $3::float8),
       next_part = next_part + 1,
       updated_at = now()
 WHERE id = $1
   AND status = 'open'
   AND (expires_at > now() OR $5::bool)
   AND (lock_token IS NULL OR lock_expires_at < now())
   AND ($4::bigint IS NULL OR received = $4::bigint)
RETURNING *;

-- name: upload_allocate_part
-- A part number of its own for the next part; numbers are never reused, so a part
-- written late by a request that lost its lease can never replace a listed one.
UPDATE uploads
   SET next_part = next_part + 1,
       lock_expires_at = now() + make_interval(secs => $3::float8)
 WHERE id = $1 AND lock_token = $2 AND status = 'open'
RETURNING next_part - 1 AS number;

-- name: upload_commit
-- $3 received, $4 parts (JSON), $5 pending (JSON), $6 lease seconds, $7 what becomes
-- of the lease with the same write: 'hold' (renewed), or 'park' (the request's last
-- write): the token stays but the lease expires at once, so any request may take
-- it, and the next part number is allocated for the next request of the process
-- that parked it, which then needs no claim (core/uploads.py, `ParkedLeases`)
UPDATE uploads
   SET received = $3,
       parts = ($4::text)::jsonb,
       pending = ($5::text)::jsonb,
       lock_expires_at = CASE WHEN $7::text = 'park' THEN now()
                              ELSE now() + make_interval(secs => $6::float8) END,
       next_part = next_part + CASE WHEN $7::text = 'park' THEN 1 ELSE 0 END,
       updated_at = now()
 WHERE id = $1 AND lock_token = $2 AND status = 'open'
RETURNING *;

-- name: upload_renew
UPDATE uploads
   SET lock_expires_at = now() + make_interval(secs => $3::float8)
 WHERE id = $1 AND lock_token = $2 AND status = 'open'
RETURNING id;

-- name: upload_release
UPDATE uploads SET lock_token = NULL, lock_expires_at = NULL
 WHERE id = $1 AND lock_token = $2;

-- name: upload_end
-- The upload leaves `open`: $3 completed | failed | terminated | expired, $4 the reason.
UPDATE uploads
   SET status = $3,
       error = $4,
       lock_token = NULL,
       lock_expires_at = NULL,
       updated_at = now()
 WHERE id = $1 AND lock_token = $2 AND status = 'open'
RETURNING *;

-- name: upload_expires_in
-- Seconds until the upload expires (<= 0: it has), by the database's clock: the
-- rule `upload_claim` applies in its own statement, for everyone else (the protocol's
-- refusals, the expire_upload job).
SELECT extract(epoch FROM expires_at - now())::float8 FROM uploads WHERE id = $1;
