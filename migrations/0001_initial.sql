-- StoryForge origin: initial schema (DESIGN.md "Data", "Jobs").

CREATE TABLE users (
    id          text PRIMARY KEY CHECK (id ~ '^usr_[0-9a-z]{12,32}$'),
    username    text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE scenes (
    id          text PRIMARY KEY CHECK (id ~ '^scn_[0-9a-z]{12,32}$'),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    -- bumped by every change that alters what the scene plays (publish, delete):
    -- the stitched playlists' cache key and ETag.
    version     bigint NOT NULL DEFAULT 0,
    deleted_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE segments (
    id              text PRIMARY KEY CHECK (id ~ '^seg_[0-9a-z]{12,32}$'),
    scene_id        text NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    sequence        integer NOT NULL CHECK (sequence >= 1),
    contributor_id  text NOT NULL REFERENCES users (id),
    status          text NOT NULL DEFAULT 'processing'
                    CHECK (status IN ('processing', 'ready', 'failed')),
    duration        double precision CHECK (duration > 0),
    error           text,
    metadata        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    ready_at        timestamptz,
    CONSTRAINT segments_scene_sequence UNIQUE (scene_id, sequence),
    CONSTRAINT segments_ready_has_duration CHECK (status <> 'ready' OR duration IS NOT NULL)
);
-- the stitcher reads the ready clips of one scene in sequence order
CREATE INDEX segments_ready_by_scene ON segments (scene_id, sequence) WHERE status = 'ready';
CREATE INDEX segments_contributor ON segments (contributor_id);

CREATE TABLE renditions (
    segment_id         text NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    profile            text NOT NULL CHECK (profile ~ '^[0-9]{3,4}p$'),
    width              integer NOT NULL CHECK (width > 0),
    height             integer NOT NULL CHECK (height > 0),
    frame_rate         double precision NOT NULL CHECK (frame_rate > 0),
    codecs             text NOT NULL,
    bandwidth_peak     integer NOT NULL CHECK (bandwidth_peak > 0),
    bandwidth_average  integer NOT NULL CHECK (bandwidth_average > 0),
    -- EXTINF and byte size of every media segment, in order: enough to stitch
    -- scene playlists without reading storage.
    durations          double precision[] NOT NULL,
    sizes              bigint[] NOT NULL,
    PRIMARY KEY (segment_id, profile),
    CHECK (cardinality(durations) = cardinality(sizes) AND cardinality(durations) > 0)
);

CREATE TABLE jobs (
    id                text PRIMARY KEY CHECK (id ~ '^job_[0-9a-z]{12,32}$'),
    kind              text NOT NULL CHECK (kind IN ('transcode', 'export', 'delete_scene')),
    payload           jsonb NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after         timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker            text,
    progress          real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    -- one entry per failed attempt: {"attempt", "at", "error"}
    errors            jsonb NOT NULL DEFAULT '[]',
    last_error        text,
    dedupe_key        text,
    scene_id          text,
    segment_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CHECK (status <> 'running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);
-- claim: oldest due queued job first
CREATE INDEX jobs_claimable ON jobs (run_after, created_at) WHERE status = 'queued';
-- reaper: running jobs whose lease expired
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
-- in-flight dedupe: at most one queued/running job per key
CREATE UNIQUE INDEX jobs_dedupe_in_flight ON jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX jobs_segment ON jobs (segment_id) WHERE segment_id IS NOT NULL;

CREATE TABLE exports (
    id             text PRIMARY KEY CHECK (id ~ '^exp_[0-9a-z]{12,32}$'),
    scene_id       text NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    quality        text NOT NULL CHECK (quality ~ '^[0-9]{3,4}p$'),
    scene_version  bigint NOT NULL,
    status         text NOT NULL DEFAULT 'processing'
                   CHECK (status IN ('processing', 'ready', 'failed')),
    job_id         text REFERENCES jobs (id) ON DELETE SET NULL,
    size           bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz
);
CREATE INDEX exports_lookup ON exports (scene_id, quality, scene_version, created_at DESC);
