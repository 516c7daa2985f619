"""Keys, ID validation and per-file HTTP metadata (origin/layout.py)."""

import pytest

from origin import layout

SCN = "scn_0123456789abcdef"
SEG = "seg_abcdefghjkmnpqrs"
EXP = "exp_0123456789abcdef"


@pytest.mark.parametrize("prefix", ["usr", "scn", "seg", "job", "exp"])
def test_new_ids_validate(prefix):
    value = layout.new_id(prefix)
    assert layout.is_id(value, prefix)
    assert value != layout.new_id(prefix)


@pytest.mark.parametrize(
    "value,prefix,ok",
    [
        (SCN, "scn", True),
        (SCN, "seg", False),
        ("scn_short", "scn", False),
        ("scn_0123456789ABCDEF", "scn", False),
        ("scn_0123456789abcdef/..", "scn", False),
        ("scn_0123456789abcdef\n", "scn", False),
        ("../scn_0123456789abcdef", "scn", False),
        ("scn_" + "a" * 33, "scn", False),
        ("", "scn", False),
    ],
)
def test_id_validation(value, prefix, ok):
    assert layout.is_id(value, prefix) is ok


@pytest.mark.parametrize(
    "name,ok",
    [
        ("master.m3u8", True),
        ("720p.m3u8", True),
        ("1080p_0001.ts", True),
        ("720p_12345.ts", True),
        ("thumbnail.jpg", True),
        ("thumbnail_large.jpg", True),
        ("storyboard.jpg", True),
        ("storyboard_2.jpg", True),
        ("storyboard.vtt", True),
        ("source.mp4", True),
        ("metadata.json", True),
        ("../master.m3u8", False),
        ("720p_1.ts", False),
        ("foo.ts", False),
        ("master.m3u8/", False),
        ("%2e%2e", False),
        ("transcode_log.txt", False),
    ],
)
def test_segment_file_names(name, ok):
    assert layout.is_segment_file(name) is ok


@pytest.mark.parametrize(
    "name,ctype,cache,tag",
    [
        ("720p_0001.ts", "video/mp2t", "public, max-age=31536000, immutable", "hls"),
        ("720p.m3u8", "application/vnd.apple.mpegurl", layout.SEGMENT_PLAYLIST_CACHE, "hls"),
        ("master.m3u8", "application/vnd.apple.mpegurl", layout.SEGMENT_PLAYLIST_CACHE, "hls"),
        ("thumbnail.jpg", "image/jpeg", "public, max-age=604800", "thumbnail"),
        ("storyboard.vtt", "text/vtt; charset=utf-8", "public, max-age=604800", "thumbnail"),
        ("source.mp4", "video/mp4", "private, max-age=86400", "source"),
        ("metadata.json", "application/json", "public, max-age=3600", "hls"),
        ("icon.png", "image/png", "public, max-age=604800", "thumbnail"),
        ("noext", "application/octet-stream", "private, no-store", "internal"),
    ],
)
def test_file_meta(name, ctype, cache, tag):
    meta = layout.file_meta(name)
    assert (meta.content_type, meta.cache_control, meta.tag) == (ctype, cache, tag)


def test_keys():
    assert layout.segment_key(SCN, SEG, "720p_0001.ts") == f"{SCN}/{SEG}/720p_0001.ts"
    assert layout.media_segment_name("720p", 1) == "720p_0001.ts"
    assert layout.media_segment_name("1080p", 12345) == "1080p_12345.ts"
    assert layout.upload_key("job_0123456789abcdef") == "jobs/job_0123456789abcdef/raw_output.mp4"
    assert layout.export_key(SCN, EXP, "full_720p.mp4") == f"{SCN}/{EXP}/full_720p.mp4"
    assert layout.export_manifest_key(SCN, EXP) == f"{SCN}/{EXP}/export_manifest.json"
    assert layout.export_prefix(SCN, EXP) == f"{SCN}/{EXP}/"
    assert layout.export_path(SCN, EXP, "moment_1080p.mp4") == f"/e/{SCN}/{EXP}/moment_1080p.mp4"
    assert layout.export_file_name("720p", moment=False) == "full_720p.mp4"
    assert layout.export_file_name("1080p", moment=True) == "moment_1080p.mp4"
    assert layout.job_export_log_key("job_0123456789abcdef") == (
        "jobs/job_0123456789abcdef/export_log.txt"
    )
    for bad in ("../full_720p.mp4", "full_720p.ts", "full_4k.mp4", "x.json", "full_720p.mp4/"):
        assert not layout.is_export_file(bad)
        with pytest.raises(ValueError):
            layout.export_key(SCN, EXP, bad)
    with pytest.raises(ValueError):
        layout.export_file_name("../x", moment=False)
    assert layout.poster_key(SCN) == f"scenes/{SCN}/poster.jpg"
    with pytest.raises(ValueError):
        layout.segment_key(SCN, SEG, "../../etc/passwd")


def test_cdn_mapping_seed_3_2():
    # s3://storyforge-videos/scn/seg/master.m3u8 -> https://cdn/v/scn/seg/master.m3u8
    path = layout.cdn_path(SCN, SEG, "master.m3u8")
    assert path == f"/v/{SCN}/{SEG}/master.m3u8"
    assert layout.cdn_url("https://cdn.storyforge.io", path) == (
        f"https://cdn.storyforge.io/v/{SCN}/{SEG}/master.m3u8"
    )
    assert layout.cdn_url("", path) == path
    assert layout.cdn_path(SCN, name="master.m3u8") == f"/v/{SCN}/master.m3u8"


@pytest.mark.parametrize(
    "key,ok",
    [
        ("avatars/usr_0123456789abcdef.jpg", True),
        ("topics/space-opera/icon.png", True),
        (f"scenes/{SCN}/poster.jpg", True),
        (f"scenes/{SCN}/reference/style_frame.png", True),
        (f"scenes/{SCN}/reference/../../x", False),
        ("avatars/../secret", False),
        ("/etc/passwd", False),
    ],
)
def test_asset_keys(key, ok):
    assert layout.is_asset_key(key) is ok
