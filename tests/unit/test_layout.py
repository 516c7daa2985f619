"""Keys, ID validation and per-file HTTP metadata (core/layout.py)."""

import pytest

from core import layout

SCN = "scn_0123456789abcdef"
SEG = "seg_abcdefghjkmnpqrs"
EXP = "exp_0123456789abcdef"


@pytest.mark.parametrize("prefix", ["usr", "scn", "seg", "job", "exp", "top", "ent"])
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


ENT = "ent_0123456789abcdef"
TOP = "top_0123456789abcdef"


@pytest.mark.parametrize(
    "key,ok,reference",
    [
        ("avatars/usr_0123456789abcdef.jpg", True, False),
        (f"topics/{TOP}/icon.png", True, False),
        (f"scenes/{SCN}/poster.jpg", True, False),
        (f"scenes/{SCN}/reference/style_frame.png", True, True),
        (f"scenes/{SCN}/reference/voice_anchor.wav", True, True),
        (f"scenes/{SCN}/reference/char_{ENT}_portrait.png", True, True),
        # ids follow the ID rules, names are exactly the seed's
        ("topics/space-opera/icon.png", False, False),
        ("topics/top_SHOUTING12345/icon.png", False, False),
        (f"scenes/{SCN}/reference/char_bob_portrait.png", False, False),
        (f"scenes/{SCN}/reference/char_{ENT}_portrait.jpg", False, False),
        (f"scenes/{SCN}/reference/notes.txt", False, False),
        (f"scenes/{SCN}/reference/../../x", False, False),
        (f"scenes/{SCN}/reference/", False, False),
        ("avatars/../secret", False, False),
        ("avatars/usr_0123456789abcdef.png", False, False),
        ("/etc/passwd", False, False),
    ],
)
def test_asset_keys(key, ok, reference):
    assert layout.is_asset_key(key) is ok
    assert layout.is_reference_key(key) is reference


def test_asset_key_builders_and_meta():
    assert layout.topic_icon_key(TOP) == f"topics/{TOP}/icon.png"
    assert layout.portrait_name(ENT) == f"char_{ENT}_portrait.png"
    assert layout.portrait_entity(f"char_{ENT}_portrait.png") == ENT
    assert layout.portrait_entity("char_x_portrait.png") is None
    assert layout.reference_key(SCN, "style_frame.png") == f"scenes/{SCN}/reference/style_frame.png"
    assert layout.asset_path(layout.avatar_key("usr_0123456789abcdef")) == (
        "/a/avatars/usr_0123456789abcdef.jpg"
    )
    for bad in (("scn_x", "style_frame.png"), (SCN, "style_frame.jpg"), (SCN, "../x")):
        with pytest.raises(ValueError):
            layout.reference_key(*bad)
    with pytest.raises(ValueError):
        layout.portrait_name("ent_../x")
    # assets change in place: short max-age, revalidated by ETag
    expected = {
        "avatars/usr_0123456789abcdef.jpg": "image/jpeg",
        f"topics/{TOP}/icon.png": "image/png",
        f"scenes/{SCN}/reference/voice_anchor.wav": "audio/wav",
        f"scenes/{SCN}/poster.jpg": "image/jpeg",
    }
    for key, ctype in expected.items():
        meta = layout.asset_meta(key)
        assert (meta.content_type, meta.cache_control, meta.tag) == (
            ctype,
            "public, max-age=300",
            "thumbnail",
        )


def test_export_captions_names():
    assert layout.export_captions_name("full_720p.mp4", "pt-BR") == "full_720p.pt-BR.vtt"
    assert layout.export_captions_name("moment_1080p.mp4", "en") == "moment_1080p.en.vtt"
    assert layout.export_key(SCN, EXP, "full_720p.en.vtt") == f"{SCN}/{EXP}/full_720p.en.vtt"
    assert layout.export_captions_language("moment_720p.zh-Hant.vtt") == "zh-Hant"
    for bad in ("full_720p.vtt", "full_720p.e.vtt", "full_720p.en/x.vtt", "x.en.vtt"):
        assert layout.export_captions_language(bad) is None
        assert not layout.is_export_file(bad)
    with pytest.raises(ValueError):
        layout.export_captions_name("full_720p.mp4", "../x")
    meta = layout.EXPORT_CAPTIONS_META
    assert (meta.content_type, meta.cache_control) == (
        "text/vtt; charset=utf-8",
        layout.EXPORT_META.cache_control,
    )
