"""core/invalidation.py: the CDN paths a scene's changes make stale, and how paths
are cut into CloudFront requests within its limits."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from core import cachetags, cdn
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


# --- what each change makes stale, for either kind of CDN (issue 28) -----------------

S, G, E = "scn_aaaaaaaaaaaa", "seg_bbbbbbbbbbbb", "exp_cccccccccccc"


def test_each_change_names_its_paths_and_its_tags():
    assert inv.scene_deleted(S) == inv.Stale(
        frozenset(inv.scene_deleted_paths(S)), frozenset(), frozenset({S})
    )
    assert inv.segment_removed(S, G) == inv.stale(inv.segment_paths(S, G), gone=[G])
    assert inv.scene_documents(S, ["720p"], query_variants=False) == inv.stale(
        [f"/v/{S}/master.m3u8", f"/v/{S}/720p.m3u8", f"/v/{S}/storyboard.vtt"], [f"{S}.docs"]
    )
    assert inv.poster(S) == inv.stale([f"/a/scenes/{S}/poster.jpg"], [f"a.scenes.{S}.poster.jpg"])
    assert inv.segment_documents(S, G, ["720p", "1080p"]) == inv.stale(
        [f"/v/{S}/{G}/master.m3u8", f"/v/{S}/{G}/1080p.m3u8", f"/v/{S}/{G}/720p.m3u8"],
        [f"{G}.docs"],
    )
    # the first generation's names have no _gN; the tag names the generation either way
    assert inv.generation_gone(S, G, ["720p", "1080p"], 1) == inv.stale(
        [f"/v/{S}/{G}/1080p_*", f"/v/{S}/{G}/720p_*"], gone=[f"{G}.g1"]
    )
    assert inv.generation_gone(S, G, ["720p"], 2).paths == {f"/v/{S}/{G}/720p_g2_*"}
    key = "avatars/usr_dddddddddddd.jpg"
    assert inv.asset_changed(key) == inv.stale([f"/a/{key}"], ["a.avatars.usr_dddddddddddd.jpg"])
    assert inv.asset_changed(key, deleted=True).gone == {"a.avatars.usr_dddddddddddd.jpg"}
    # changes add up; nothing is falsy
    both = inv.scene_documents(S, [], query_variants=True) | inv.poster(S)
    assert both.tags == {f"{S}.docs", f"a.scenes.{S}.poster.jpg"}
    assert not inv.Stale() and both


def test_the_tags_of_a_change_are_those_of_the_answers_it_changes():
    """A tag purged by a change is one that the answers it changes carry."""
    cases = [
        (inv.scene_deleted(S).gone, f"/v/{S}/{G}/720p_0001.ts"),
        (inv.scene_deleted(S).gone, f"/e/{S}/{E}/full_720p.mp4"),
        (inv.scene_deleted(S).gone, f"/a/scenes/{S}/reference/style_frame.png"),
        (inv.scene_documents(S, ["720p"], query_variants=False).tags, f"/v/{S}/720p.m3u8"),
        (inv.scene_documents(S, [], query_variants=False).tags, f"/v/{S}/thumbnail.jpg"),
        (inv.segment_removed(S, G).gone, f"/v/{S}/{G}/storyboard.jpg"),
        (inv.segment_documents(S, G, ["720p"]).tags, f"/v/{S}/{G}/720p.m3u8"),
        (inv.generation_gone(S, G, ["720p"], 2).gone, f"/v/{S}/{G}/720p_g2_0007.ts"),
        (inv.generation_gone(S, G, ["720p"], 1).gone, f"/v/{S}/{G}/720p_0007.ts"),
        (inv.poster(S).tags, f"/a/scenes/{S}/poster.jpg"),
    ]
    for tags, path in cases:
        assert tags & set(cachetags.of_path(path)), (tags, path)
    # and not those of answers it leaves alone
    assert not inv.generation_gone(S, G, ["720p"], 1).gone & set(
        cachetags.of_path(f"/v/{S}/{G}/720p_g2_0001.ts")
    )
    assert not inv.scene_documents(S, ["720p"], query_variants=False).tags & set(
        cachetags.of_path(f"/v/{S}/{G}/720p_0001.ts")
    )


def test_tag_requests_purge_what_is_gone_hard_and_the_rest_soft():
    change = inv.stale(["/v/x/*"], tags=["b", "a", "gone"], gone=["gone"])
    assert inv.tag_requests(change) == [
        inv.Request(("gone",), soft=False),
        inv.Request(("a", "b"), soft=True),
    ]
    assert inv.tag_requests(inv.stale(["/v/x/*"])) == []  # paths only: nothing to purge
    many = inv.tag_requests(inv.stale(tags=[f"t{i:03d}" for i in range(inv.MAX_TAGS + 1)]))
    assert [len(r.items) for r in many] == [inv.MAX_TAGS, 1]
    with pytest.raises(ValueError):
        inv.tag_requests(inv.stale(tags=["a b"]))
    # paths go to CloudFront as plan() cuts them
    assert inv.path_requests(inv.stale(["/v/s/*", "/v/s/a.ts"], ["t"])) == [
        inv.Request(("/v/s/*",))
    ]


@pytest.mark.parametrize(
    ("path", "tags"),
    [
        (f"/v/{S}/master.m3u8", (S, f"{S}.docs")),
        (f"/v/{S}/1080p.m3u8", (S, f"{S}.docs")),
        (f"/v/{S}/chapters.vtt", (S, f"{S}.docs")),
        (f"/v/{S}/{G}/720p_0001.ts", (S, G, f"{G}.g1")),
        (f"/v/{S}/{G}/1080p_g12_000003.ts", (S, G, f"{G}.g12")),
        (f"/v/{S}/{G}/master.m3u8", (S, G, f"{G}.docs")),
        (f"/v/{S}/{G}/thumbnail.jpg", (S, G, f"{G}.docs")),
        (f"/v/{S}/{G}/storyboard.vtt", (S, G)),
        (f"/e/{S}/{E}/full_720p.mp4", (S, E)),
        ("/a/avatars/usr_dddddddddddd.jpg", ("a.avatars.usr_dddddddddddd.jpg",)),
        ("/a/topics/top_dddddddddddd/icon.png", ("a.topics.top_dddddddddddd.icon.png",)),
        (f"/a/scenes/{S}/poster.jpg", (S, f"a.scenes.{S}.poster.jpg")),
        # nothing valid named: no tags
        ("/v/scn_short/master.m3u8", ()),
        (f"/v/{S}/", ()),
        (f"/v/{S}/{G}/", ()),
        (f"/v/{S}/{G}/x/y.ts", ()),
        (f"/e/{S}/{G}/full_720p.mp4", ()),
        ("/a/avatars/../../etc/passwd", ()),
        ("/api/v1/scenes", ()),
        ("/healthz", ()),
    ],
)
def test_the_tags_of_an_answer_follow_from_its_path(path, tags):
    assert cachetags.of_path(path) == tags
    assert all(inv.check_tag(t) for t in tags)


def test_the_tag_header_value_in_both_styles():
    assert cachetags.header_value(("a", "b.c")) == "a b.c"
    assert cachetags.header_value(("a", "b.c"), ",") == "a,b.c"


class Recorder:
    """A tag-purging invalidator that records when each request would have gone out."""

    backend = "recorder"
    by_tag = True

    def __init__(self) -> None:
        self.sent: list[tuple[float, inv.Request]] = []

    def requests(self, change: inv.Stale) -> list[inv.Request]:
        return inv.tag_requests(change)

    async def send(self, request: inv.Request) -> None:
        self.sent.append((time.monotonic(), request))

    async def aclose(self) -> None:
        return None


async def test_what_is_gone_goes_at_once_and_what_is_stale_settles_first():
    recorder = Recorder()
    counted: list[tuple[str, str, int, int]] = []

    async def count(backend: str, outcome: str, requests: int, items: int) -> None:
        counted.append((backend, outcome, requests, items))

    invalidations = cdn.Invalidations(recorder, window=2.0, settle=0.3, count=count)
    try:
        started = time.monotonic()
        await invalidations.invalidate(S, inv.scene_documents(S, [], query_variants=False))
        settled = recorder.sent[-1][0] - started
        # within the scene's window now: a deletion does not wait for it
        await invalidations.invalidate(S, inv.scene_deleted(S))
        gone = recorder.sent[-1][0] - started - settled
    finally:
        await invalidations.aclose()
    assert 0.3 <= settled < 1.5, settled
    assert gone < 1.0, gone  # not the 2 s window
    assert [r for _, r in recorder.sent] == [
        inv.Request((f"{S}.docs",), soft=True),
        inv.Request((S,), soft=False),
    ]
    assert counted == [("recorder", "sent", 1, 1), ("recorder", "sent", 1, 1)]
