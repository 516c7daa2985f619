-- Resumable uploads (tus 1.0.0) and the webhook outbox (issue 18).

-- One row per tus upload: its state lives here so any origin process can take the
-- next request. `received` is the tus Upload-Offset: the bytes stored in `parts`
-- (multipart parts, ascending) plus those of `pending` (objects in the internal
-- bucket holding bytes not yet in a part, where the backend needs parts >= 5 MiB).
-- One request at a time writes an upload: it holds `lock_token` until
-- `lock_expires_at` (a lease, renewed while bytes arrive; every write is fenced by it).
CREATE TABLE uploads (
    id               text PRIMARY KEY CHECK (id ~ '^upl_[0-9a-z]{26}$'),
    scene_id         text NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    contributor_id   text NOT NULL REFERENCES users (id),
    sequence         integer CHECK (sequence >= 1),
    filename         text,
    content_type     text NOT NULL,
    metadata         text NOT NULL DEFAULT '',
    length           bigint NOT NULL CHECK (length > 0),
    received         bigint NOT NULL DEFAULT 0,
    segment_id       text NOT NULL,
    job_id           text NOT NULL,
    multipart_id     text NOT NULL,
    part_size        bigint NOT NULL CHECK (part_size > 0),
    parts            jsonb NOT NULL DEFAULT '[]',
    next_part        integer NOT NULL DEFAULT 1,
    pending          jsonb NOT NULL DEFAULT '[]',
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'completed', 'failed', 'terminated', 'expired')),
    error            text,
    lock_token       uuid,
    lock_expires_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK (received BETWEEN 0 AND length)
);

-- Events (DESIGN.md "API": segment.ready/failed, export.ready/failed, scene.deleted),
-- written in the transaction of the change they report. `seq` orders one scene's
-- events: it comes from webhook_scene_seq, whose row the writing transaction keeps
-- locked until it commits, so seq order is commit order.
CREATE TABLE webhook_events (
    id          text PRIMARY KEY CHECK (id ~ '^evt_[0-9a-z]{12,32}$'),
    type        text NOT NULL,
    scene_id    text NOT NULL,
    seq         bigint NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scene_id, seq)
);

CREATE TABLE webhook_scene_seq (
    scene_id  text PRIMARY KEY,
    seq       bigint NOT NULL
);

-- One delivery per event and endpoint. `waiting`: an earlier event of the same scene
-- to the same endpoint is not finished yet; `queued`: its webhook job exists;
-- `delivered` / `dead` are final. Finishing one queues the next waiting one.
CREATE TABLE webhook_deliveries (
    event_id      text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint      text NOT NULL,
    scene_id      text NOT NULL,
    seq           bigint NOT NULL,
    status        text NOT NULL CHECK (status IN ('waiting', 'queued', 'delivered', 'dead')),
    job_id        text,
    finished_at   timestamptz,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_unfinished ON webhook_deliveries (scene_id, endpoint, seq)
    WHERE status IN ('waiting', 'queued');

-- the job kinds: DESIGN.md's (transcode, export, delete_scene, remove_segment,
-- webhook, refine) and the expiry of one abandoned upload
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN (
    'transcode', 'export', 'delete_scene', 'remove_segment', 'webhook', 'refine',
    'expire_upload'));
