-- Captions (issue 27; core/subtitles.py): one normalised WebVTT file per clip and
-- language (migration 0010). A change runs in one transaction with the scene's
-- version bump and its `captions.updated` event. Lock order as a publish: the
-- segment, then the scene.

-- name: captions_segment_lock
-- The clip captions are written for: not removed, in a live scene; locked.
SELECT s.id, s.scene_id, s.status, s.duration
FROM segments s JOIN scenes sc ON sc.id = s.scene_id AND sc.deleted_at IS NULL
WHERE s.id = $1 AND s.status <> 'removed'
FOR UPDATE OF s;

-- name: captions_upsert
-- $1 segment, $2 language, $3 WebVTT, $4 cue count. Every write is a new revision.
INSERT INTO captions AS c (segment_id, language, vtt, cues)
VALUES ($1, $2, $3, $4)
ON CONFLICT (segment_id, language) DO UPDATE
   SET vtt = EXCLUDED.vtt, cues = EXCLUDED.cues, revision = nextval('captions_revision'),
       updated_at = now()
RETURNING revision, (xmax = 0) AS created, updated_at;

-- name: captions_delete
DELETE FROM captions WHERE segment_id = $1 AND language = $2 RETURNING revision;

-- name: captions_of_segment
-- A clip's languages (not removed, in a live scene), without the text.
SELECT c.language, c.cues, c.revision, c.updated_at
FROM captions c
JOIN segments s ON s.id = c.segment_id AND s.status <> 'removed'
JOIN scenes sc ON sc.id = s.scene_id AND sc.deleted_at IS NULL
WHERE c.segment_id = $1
ORDER BY c.language;

-- name: captions_text
-- One language's WebVTT as stored (the clip not removed, its scene live).
SELECT c.vtt, c.revision
FROM captions c
JOIN segments s ON s.id = c.segment_id AND s.status <> 'removed'
JOIN scenes sc ON sc.id = s.scene_id AND sc.deleted_at IS NULL
WHERE c.segment_id = $1 AND c.language = $2;
