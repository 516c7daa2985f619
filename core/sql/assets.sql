-- Avatars, topic icons and scene references (origin/assets/service.py).

-- name: lock_asset
-- Writes of one key take turns until their transaction ends (storage write + row).
SELECT pg_advisory_xact_lock(hashtextextended('asset:' || $1, 0));

-- name: user_for_asset
-- FOR SHARE: the user cannot be deleted while its avatar is written.
SELECT id FROM users WHERE id = $1 FOR SHARE;

-- name: live_scene_for_asset
-- FOR SHARE: a scene being written to cannot be marked deleted until the write commits,
-- so its deletion (which lists scenes/{sceneId}/ afterwards) finds the new object.
SELECT id FROM scenes WHERE id = $1 AND deleted_at IS NULL FOR SHARE;

-- name: upsert_asset
INSERT INTO assets (key, kind, user_id, topic_id, scene_id, entity_id, content_type, size,
                    etag, width, height, duration)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (key) DO UPDATE
SET content_type = EXCLUDED.content_type, size = EXCLUDED.size, etag = EXCLUDED.etag,
    width = EXCLUDED.width, height = EXCLUDED.height, duration = EXCLUDED.duration,
    updated_at = now()
RETURNING key, kind, entity_id, content_type, size, etag, width, height, duration,
          created_at, updated_at, (xmax = 0) AS created;

-- name: delete_asset
DELETE FROM assets WHERE key = $1 RETURNING key;

-- name: scene_references
SELECT key, kind, entity_id, content_type, size, etag, width, height, duration,
       created_at, updated_at, false AS created
FROM assets WHERE scene_id = $1 ORDER BY key;
