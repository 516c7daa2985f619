-- Users, scenes, segments and renditions (DESIGN.md "Data").

-- name: create_user
INSERT INTO users (id, username) VALUES ($1, $2)
RETURNING id, username, created_at;

-- name: get_user
SELECT id, username, created_at FROM users WHERE id = $1;

-- name: create_scene
INSERT INTO scenes (id, title) VALUES ($1, $2)
RETURNING id, title, version, created_at, updated_at;

-- name: get_live_scene
SELECT id, title, version, created_at, updated_at
FROM scenes WHERE id = $1 AND deleted_at IS NULL;

-- name: insert_segment
-- sequence NULL means "after the last one"; the unique constraint settles races.
INSERT INTO segments (id, scene_id, sequence, contributor_id)
VALUES ($1, $2,
        COALESCE($3, (SELECT COALESCE(max(sequence), 0) + 1 FROM segments WHERE scene_id = $2)),
        $4)
RETURNING id, scene_id, sequence, contributor_id, status;

-- name: get_segment_status
SELECT s.id, s.scene_id, s.sequence, s.contributor_id, s.status, s.duration, s.error,
       s.created_at, s.ready_at, s.quality, s.generation, j.id AS job_id, j.status AS job_status, j.progress,
       j.attempts, j.last_error
FROM segments s
LEFT JOIN LATERAL (
    SELECT id, status, progress, attempts, last_error FROM jobs
    WHERE jobs.segment_id = s.id AND jobs.kind = 'transcode'
    ORDER BY created_at DESC LIMIT 1
) j ON true
WHERE s.id = $1 AND s.status <> 'removed'
  AND EXISTS (SELECT 1 FROM scenes sc WHERE sc.id = s.scene_id AND sc.deleted_at IS NULL);

-- name: get_segment_for_job
SELECT s.id, s.scene_id, s.sequence, s.contributor_id, s.status,
       (sc.deleted_at IS NULL) AS scene_live
FROM segments s JOIN scenes sc ON sc.id = s.scene_id
WHERE s.id = $1;

-- name: fail_segment
UPDATE segments SET status = 'failed', error = $2
WHERE id = $1 AND status = 'processing'
RETURNING scene_id, sequence, contributor_id;

-- name: mark_segment_ready
-- Publishing, only once: run in the transaction that holds the transcode job's lease
-- fence (core.queue.lock_lease), so only the job's owner can publish.
UPDATE segments SET status = 'ready', duration = $2, metadata = $3, ready_at = now(),
       error = NULL
WHERE id = $1 AND status = 'processing'
RETURNING scene_id, sequence, contributor_id;

-- name: insert_rendition
INSERT INTO renditions (segment_id, profile, width, height, frame_rate, codecs,
                        bandwidth_peak, bandwidth_average, durations, sizes, first_pts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: bump_scene_version
UPDATE scenes SET version = version + 1, updated_at = now() WHERE id = $1
RETURNING version;

-- name: first_ready_segment
SELECT id FROM segments WHERE scene_id = $1 AND status = 'ready'
ORDER BY sequence LIMIT 1;

-- name: scene_clips
-- Everything the stitcher needs, in one round trip: ready clips in sequence order
-- with their renditions, contributors and captions ("language/revision"; $2: include
-- the storyboard cues).
SELECT s.id, s.sequence, s.duration, s.generation,
       CASE WHEN $2 THEN s.metadata -> 'storyboard' END AS storyboard,
       u.id AS contributor_id, u.username,
       r.profile, r.width, r.height, r.frame_rate, r.codecs, r.bandwidth_peak,
       r.bandwidth_average, r.durations, r.sizes, r.first_pts,
       ARRAY(SELECT c.language || '/' || c.revision FROM captions c
             WHERE c.segment_id = s.id ORDER BY c.language) AS captions
FROM segments s
JOIN users u ON u.id = s.contributor_id
JOIN renditions r ON r.segment_id = s.id
WHERE s.scene_id = $1 AND s.status = 'ready'
ORDER BY s.sequence, r.profile;

-- name: scene_captions_text
-- The captions of a scene's ready clips, as stored (an export's sidecars are made of
-- them: read in the transaction that reads the clips, core/catalog.py `scene_view`).
SELECT c.segment_id, c.language, c.vtt
FROM captions c JOIN segments s ON s.id = c.segment_id
WHERE s.scene_id = $1 AND s.status = 'ready'
ORDER BY s.sequence, c.language;

-- name: ready_segment_generation
-- A clip removed from its scene ('removed') keeps serving its own files until its
-- grace period ends, for players holding the previous stitched playlist. Its current
-- generation keys what is built from its rows (a refinement changes them).
SELECT s.generation FROM segments s JOIN scenes sc ON sc.id = s.scene_id
WHERE s.id = $1 AND s.scene_id = $2 AND s.status IN ('ready', 'removed')
  AND sc.deleted_at IS NULL;

-- name: live_scene_version
SELECT version FROM scenes WHERE id = $1 AND deleted_at IS NULL;

-- name: segment_clip
-- One ready (or removed, in its grace period) segment of a live scene with its
-- renditions and storyboard cues: what its own playlists and storyboard VTT are
-- built from.
SELECT s.id, s.sequence, s.duration, s.generation, s.metadata -> 'storyboard' AS storyboard,
       u.id AS contributor_id, u.username,
       r.profile, r.width, r.height, r.frame_rate, r.codecs, r.bandwidth_peak,
       r.bandwidth_average, r.durations, r.sizes, r.first_pts,
       ARRAY(SELECT c.language || '/' || c.revision FROM captions c
             WHERE c.segment_id = s.id ORDER BY c.language) AS captions
FROM segments s
JOIN scenes sc ON sc.id = s.scene_id AND sc.deleted_at IS NULL
JOIN users u ON u.id = s.contributor_id
JOIN renditions r ON r.segment_id = s.id
WHERE s.id = $1 AND s.scene_id = $2 AND s.status IN ('ready', 'removed')
ORDER BY r.profile;

-- name: lock_live_scene
-- Inside the transaction that adds a clip: the live scene's row, locked, so that
-- clips added at once get consecutive sequences and none lands in a scene being
-- deleted (core/lifecycle.py locks the same row to delete it).
SELECT id FROM scenes WHERE id = $1 AND deleted_at IS NULL FOR UPDATE;

-- name: set_rendition_loudness
-- Loudness matching (migration 0005): what the transcode measured and applied, the same
-- for every rendition of the segment; in the publishing transaction.
UPDATE renditions SET loudness_mode = $2, input_loudness = $3, input_true_peak = $4,
       loudness_gain = $5
WHERE segment_id = $1;

-- name: rendition_loudness
SELECT profile, loudness_mode, input_loudness, input_true_peak, loudness_gain
FROM renditions WHERE segment_id = $1 ORDER BY profile;

-- name: get_segment_for_refine
-- What a `refine` job needs of its clip (issue 17): still ready in a live scene, at
-- which generation, and the transcode's metadata (loudness record, storyboard).
SELECT s.id, s.scene_id, s.sequence, s.status, s.generation, s.duration, s.metadata,
       (sc.deleted_at IS NULL) AS scene_live
FROM segments s JOIN scenes sc ON sc.id = s.scene_id
WHERE s.id = $1;

-- name: mark_segment_refined
-- Publishing a refined generation ($2, the one after the current), only while the clip
-- is ready in a live scene: run in the transaction that holds the refine job's lease
-- fence, which a clip removal or a scene deletion cancels first. $3: metadata merged.
UPDATE segments s SET generation = $2, quality = 'final',
       metadata = s.metadata || ($3::text)::jsonb
FROM scenes sc
WHERE s.id = $1 AND s.status = 'ready' AND s.generation = $2 - 1
  AND sc.id = s.scene_id AND sc.deleted_at IS NULL
RETURNING s.scene_id;

-- name: delete_renditions
DELETE FROM renditions WHERE segment_id = $1;
