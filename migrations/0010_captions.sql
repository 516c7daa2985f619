-- Captions (issue 27): one normalised WebVTT file per clip and language, in the row
-- (core/captions.py parses, checks and writes it; at most CAPTIONS_MAX_BYTES in, so a
-- scene's documents are built from Postgres alone, like its playlists). `revision`
-- changes with every write (a sequence: never reused, not even after a delete) and
-- names the WebVTT segments built from it, so one URL is one content. They go with
-- their clip (ON DELETE CASCADE: a removed clip's row is purged after its grace
-- period, a deleted scene's with it).
CREATE SEQUENCE captions_revision;
CREATE TABLE captions (
    segment_id  text NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    language    text NOT NULL CHECK (language ~ '^[a-zA-Z]{2,8}(-[a-zA-Z0-9]{1,8})*$'),
    vtt         text NOT NULL CHECK (vtt LIKE 'WEBVTT%'),
    cues        integer NOT NULL CHECK (cues >= 0),
    revision    bigint NOT NULL DEFAULT nextval('captions_revision') CHECK (revision >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, language)
);

-- The presentation time of a rendition's first video frame (the source's time 0) on
-- the 90 kHz MPEG-TS clock, as the transcode measured it: a WebVTT segment's
-- X-TIMESTAMP-MAP maps cue time 0 onto it. NULL for renditions published before this migration: their clip's
-- subtitles segments stay empty (nothing to map cues by) until it is encoded again.
ALTER TABLE renditions ADD COLUMN first_pts bigint CHECK (first_pts >= 0);
