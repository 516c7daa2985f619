"""without_paths: error texts from tools reach clients without server paths."""

import pytest

from origin.http.errors import without_paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "not a readable video file: file:/tmp/storyforge-job_abc/source.mp4: Invalid data",
            "not a readable video file: source.mp4: Invalid data",
        ),
        (
            "ffmpeg exited 1: /var/lib/sf/jobs/x/720p_0001.ts: No such file",
            "ffmpeg exited 1: 720p_0001.ts: No such file",
        ),
        ("cannot open '/srv/storage/storyforge-internal/jobs/j/raw'", "cannot open 'raw'"),
        ("(/home/u/.storyforge/a/b.mp4)", "(b.mp4)"),
        ("directory /tmp/x/ is gone", "directory (path) is gone"),
        ("concat:/var/lib/sf/a.ts|/var/lib/sf/b.ts: bad", "concat:a.ts|b.ts: bad"),
        ('path="/etc/storyforge/key.pem"', 'path="key.pem"'),
        # left alone: URLs, ratios, a lone root-level name, ids
        ("see https://cdn.example/v/scn_1/a.m3u8", "see https://cdn.example/v/scn_1/a.m3u8"),
        ("s3://storyforge-internal/jobs/j/raw", "s3://storyforge-internal/jobs/j/raw"),
        ("aspect 16/9, sar 1/1", "aspect 16/9, sar 1/1"),
        ("a /single component", "a /single component"),
        ("[mov,mp4 @ 0x55d] moov atom not found", "[mov,mp4 @ 0x55d] moov atom not found"),
    ],
)
def test_without_paths(text, expected):
    assert without_paths(text) == expected
