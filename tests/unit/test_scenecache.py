"""origin/playback/caches.py: forgetting a scene drops exactly what the caches know of it."""

from __future__ import annotations

from datetime import UTC, datetime

from core import layout
from core.catalog import Scene, SceneClip, SceneView, User
from core.playlists import Clip, Rendition
from origin.playback.caches import Budgets, Built, forget_scene, new_read_caches


def db_down() -> bool:
    return True  # Postgres cannot be asked


def db_up() -> bool:
    return False


def test_forget_scene_drops_only_that_scene():
    caches = new_read_caches(16)
    for scene in ("scn_a", "scn_b"):
        caches.versions.put(scene, 3)
        caches.ready.put((scene, "seg_1"), True)
        caches.ready.put((scene, "seg_2"), True)
        caches.playlists.put((scene, 3, "master.m3u8"), Built(b"x", '"e"'))
    forget_scene(caches, "scn_a")
    assert caches.versions.get("scn_a") is None
    assert caches.ready.get(("scn_a", "seg_1")) is None
    assert caches.playlists.get(("scn_a", 3, "master.m3u8")) is None
    assert caches.versions.get("scn_b") == 3
    assert caches.ready.get(("scn_b", "seg_2")) is True
    assert caches.playlists.get(("scn_b", 3, "master.m3u8")) is not None
    forget_scene(caches, None)  # notifications may have been missed: every scene
    assert len(caches.versions) == 0 and len(caches.ready) == 0


def test_readiness_lives_no_longer_than_a_version():
    now = [0.0]
    caches = new_read_caches(16, clock=lambda: now[0])
    caches.ready.put(("scn_a", "seg_1"), True)
    caches.versions.put("scn_a", 1)
    now[0] = 1.01
    assert caches.ready.get(("scn_a", "seg_1")) is None
    assert caches.versions.get("scn_a") is None


def test_expired_entries_answer_while_the_database_is_down_within_the_bound():
    now = [0.0]
    caches = new_read_caches(16, clock=lambda: now[0], stale_seconds=600.0)
    caches.versions.put("scn_a", 4)
    caches.ready.put(("scn_a", "seg_1"), False)  # a known "no" is an answer too
    assert caches.known(caches.versions, "scn_a", db_up) == 4  # fresh: asked nothing
    now[0] = 30.0
    assert caches.versions.get("scn_a") is None  # expired: re-read when possible
    assert caches.known(caches.versions, "scn_a", db_up) is None  # Postgres can say
    assert caches.known(caches.versions, "scn_a", db_down) == 4
    assert caches.known(caches.ready, ("scn_a", "seg_1"), db_down) is False
    assert caches.known(caches.versions, "scn_b", db_down) is None  # never seen
    assert caches.stale_answers == 2
    now[0] = 600.5
    assert caches.known(caches.versions, "scn_a", db_down) is None  # older than the bound
    assert caches.stale_answers == 2


def test_a_deletion_forgets_stale_entries_too():
    now = [0.0]
    caches = new_read_caches(16, clock=lambda: now[0], stale_seconds=600.0)
    caches.versions.put("scn_a", 4)
    caches.ready.put(("scn_a", "seg_1"), True)
    caches.views.put("scn_a", None)  # any value: only its presence matters here
    caches.views.put("scn_b", None)
    now[0] = 5.0
    assert caches.views.stale("scn_a", 600.0) is None and len(caches.views) == 2
    forget_scene(caches, "scn_a")
    assert caches.known(caches.versions, "scn_a", db_down) is None
    assert caches.known(caches.ready, ("scn_a", "seg_1"), db_down) is None
    assert len(caches.views) == 1
    forget_scene(caches, None)
    assert len(caches.views) == 0


def test_without_staleness_expired_entries_are_dropped():
    now = [0.0]
    caches = new_read_caches(16, clock=lambda: now[0])
    caches.versions.put("scn_a", 4)
    now[0] = 1.5
    assert caches.versions.get("scn_a") is None
    assert len(caches.versions) == 0
    assert caches.known(caches.versions, "scn_a", db_down) is None


def _view(scene_id: str, clips: int) -> SceneView:
    rendition = Rendition("720p", 1280, 720, 30.0, "avc1.64001f", (4.0,) * 4, (500_000,) * 4, 1, 1)
    user = User(layout.new_id("usr"), "u")
    return SceneView(
        Scene(scene_id, "t", 1, datetime.now(UTC)),
        tuple(
            SceneClip(Clip(layout.new_id("seg"), 16.0, {"720p": rendition}), i + 1, user)
            for i in range(clips)
        ),
    )


def test_documents_and_rows_are_bounded_by_bytes():
    """READ_CACHE_MB: megabyte playlists (a 10,000-clip scene's) fill the playlists'
    half of the budget and no more, and the scene rows kept for outages their quarter,
    however many entries PLAYLIST_CACHE_ENTRIES allows."""
    budget = 8 * 1024 * 1024
    caches = new_read_caches(4096, max_bytes=budget, stale_seconds=600.0)
    big = b"#EXTINF:4.000,\n" * 70_000  # ~1 MB
    for scene in range(20):
        caches.playlists.put((f"scn_{scene}", 1, "720p.m3u8"), Built(big, '"e"'))
    assert caches.playlists.bytes <= Budgets.of(budget).playlists
    assert len(caches.playlists) == 3  # 4 MiB of ~1 MB documents
    assert caches.playlists.get(("scn_19", 1, "720p.m3u8")) is not None  # the newest stay
    views = [_view(f"scn_{i}", 500) for i in range(20)]
    for v in views:
        caches.views.put(v.scene.id, v)
    assert 0 < caches.views.bytes <= Budgets.of(budget).views
    assert 1 <= len(caches.views) < 20
    assert caches.views.stale(views[-1].scene.id, 600.0) is views[-1]
