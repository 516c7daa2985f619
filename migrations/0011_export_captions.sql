-- Captions sidecars of an export (issue 27): the languages of the WebVTT files written
-- beside its MP4 (`{stem}.{language}.vtt`, core/layout.py), set when it is published;
-- the export's JSON lists them and /e/ serves only those.
ALTER TABLE exports ADD COLUMN captions text[] NOT NULL DEFAULT '{}';
