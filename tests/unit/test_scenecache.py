"""origin/scenecache.py: forgetting a scene drops exactly what the caches know of it."""

from __future__ import annotations

from origin.scenecache import Built, forget_scene, new_read_caches


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
