"""core/invalidation.py: the CDN paths a scene's changes make stale, and how paths
are cut into CloudFront requests within its limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core import invalidation as inv


def test_paths_of_each_change():
    assert inv.scene_deleted_paths("scn_aaaaaaaaaaaa") == [
        "/v/scn_aaaaaaaaaaaa/*",
        "/e/scn_aaaaaaaaaaaa/*",
        "/a/scenes/scn_aaaaaaaaaaaa/*",
    ]
    assert inv.segment_paths("scn_aaaaaaaaaaaa", "seg_bbbbbbbbbbbb") == [
        "/v/scn_aaaaaaaaaaaa/seg_bbbbbbbbbbbb/*"
    ]
    assert inv.scene_document_paths("scn_a", ["1080p", "720p", "720p"], query_variants=False) == [
        "/v/scn_a/master.m3u8",
        "/v/scn_a/1080p.m3u8",
        "/v/scn_a/720p.m3u8",
        "/v/scn_a/storyboard.vtt",
    ]
    # signed URLs: the CDN keeps one copy per query; a trailing * covers them all
    assert inv.scene_document_paths("scn_a", ["720p"], query_variants=True) == [
        "/v/scn_a/master.m3u8*",
        "/v/scn_a/720p.m3u8*",
        "/v/scn_a/storyboard.vtt*",
    ]
    assert inv.poster_paths("scn_a") == ["/a/scenes/scn_a/poster.jpg"]


@pytest.mark.parametrize(
    "path", ["v/x", "", "/v/*/x", "/v/a b", "/v/\x00", "/" + "a" * 4000, "/a**"]
)
def test_paths_cloudfront_refuses_are_refused(path):
    with pytest.raises(ValueError):
        inv.check_path(path)


def test_minimal_drops_duplicates_and_what_a_wildcard_covers():
    assert inv.minimal(
        [
            "/v/s/seg/720p_0001.ts",
            "/v/s/master.m3u8",
            "/v/s/*",
            "/v/s/*",
            "/v/t/master.m3u8",
            "/a/scenes/s/poster.jpg",
            "/v/s",  # not under /v/s/ (the wildcard is /v/s/*)
        ]
    ) == ["/a/scenes/s/poster.jpg", "/v/s", "/v/s/*", "/v/t/master.m3u8"]
    assert inv.minimal(["/v/s/master.m3u8*", "/v/s/master.m3u8"]) == ["/v/s/master.m3u8*"]


def test_plan_keeps_each_request_within_cloudfronts_limits():
    files = [f"/v/s/f{i:05d}.ts" for i in range(7_001)]
    wildcards = [f"/v/w{i:02d}/*" for i in range(31)]
    batches = inv.plan(files + wildcards)
    assert sorted(p for b in batches for p in b) == sorted(files + wildcards)
    for b in batches:
        assert sum(not inv.is_wildcard(p) for p in b) <= inv.MAX_FILE_PATHS
        assert sum(inv.is_wildcard(p) for p in b) <= inv.MAX_WILDCARD_PATHS
    # as few requests as the limits allow: 7,001 files need 3, 31 wildcards need 3
    assert len(batches) == 3
    assert inv.paths_of(batches) == 7_032
    assert inv.plan([]) == []
    assert inv.plan(["/v/s/*", "/v/s/a.ts"]) == [("/v/s/*",)]


def test_caller_references_are_unique_and_dated():
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert inv.caller_reference(at, "abc") == "storyforge-20250102T030405678901Z-abc"
    assert len({inv.caller_reference(at) for _ in range(1000)}) == 1000
