-- The assets bucket's writable objects (issue 15): avatars, topic icons and scene
-- references, one row per stored object, written in the transaction that stored it
-- (origin/assets/service.py). Lists a scene's references without listing storage, and tells
-- an asset from an orphan. Scene posters are the transcoder's and have no row.

CREATE TABLE assets (
    key           text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 1024),
    kind          text NOT NULL
                  CHECK (kind IN ('avatar', 'topic_icon', 'portrait', 'style_frame',
                                  'voice_anchor')),
    user_id       text REFERENCES users (id) ON DELETE CASCADE,
    topic_id      text CHECK (topic_id ~ '^top_[0-9a-z]{12,32}$'),
    scene_id      text REFERENCES scenes (id) ON DELETE CASCADE,
    entity_id     text CHECK (entity_id ~ '^ent_[0-9a-z]{12,32}$'),
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size > 0),
    etag          text NOT NULL,
    width         integer CHECK (width > 0),
    height        integer CHECK (height > 0),
    duration      double precision CHECK (duration > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- exactly one owner, the one its kind has
    CHECK (CASE kind
               WHEN 'avatar' THEN user_id IS NOT NULL AND num_nonnulls(topic_id, scene_id) = 0
               WHEN 'topic_icon' THEN topic_id IS NOT NULL AND num_nonnulls(user_id, scene_id) = 0
               ELSE scene_id IS NOT NULL AND num_nonnulls(user_id, topic_id) = 0
           END),
    CHECK ((kind = 'portrait') = (entity_id IS NOT NULL))
);
-- a scene's references, listed by key
CREATE INDEX assets_scene ON assets (scene_id, key) WHERE scene_id IS NOT NULL;
CREATE INDEX assets_user ON assets (user_id) WHERE user_id IS NOT NULL;
