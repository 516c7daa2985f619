-- Loudness matching (issue 16, workers/media/loudness.py): what the transcode measured and
-- did to a clip's audio, the same on every rendition of the clip. NULL on renditions
-- published before this migration (not measured).
ALTER TABLE renditions
    -- linear: one gain; dynamic: loudnorm's dynamic mode (the true peak forbade a
    -- linear gain); silent: nothing above the -70 LUFS gate; no_audio: a silent track
    -- was added; off: LOUDNESS_TARGET=off
    ADD COLUMN loudness_mode text
        CHECK (loudness_mode IN ('linear', 'dynamic', 'silent', 'no_audio', 'off')),
    ADD COLUMN input_loudness double precision,   -- integrated, LUFS (ITU-R BS.1770-4)
    ADD COLUMN input_true_peak double precision,  -- dBTP; NULL for digital silence
    ADD COLUMN loudness_gain double precision;    -- dB applied (dynamic: aimed at)
