"""core/orphans.py: the row each stored object needs, read from its key."""

from __future__ import annotations

import pytest

from core.orphans import Owner, is_orphan, owner

S, G, U, J = "scn_aaaaaaaaaaaa", "seg_bbbbbbbbbbbb", "usr_cccccccccccc", "job_dddddddddddd"


@pytest.mark.parametrize(
    ("role", "key", "expected"),
    [
        ("videos", f"{S}/{G}/720p_0001.ts", Owner("segments", G, f"{S}/{G}/", S)),
        ("videos", f"{S}/{G}/master.m3u8", Owner("segments", G, f"{S}/{G}/", S)),
        ("videos", f"{S}/poster-ish.jpg", Owner("scenes", S, f"{S}/")),
        ("exports", f"{S}/full_720p.mp4", Owner("scenes", S, f"{S}/")),
        ("exports", f"{S}/export_manifest.json", Owner("scenes", S, f"{S}/")),
        ("assets", f"scenes/{S}/poster.jpg", Owner("scenes", S, f"scenes/{S}/")),
        ("assets", f"scenes/{S}/reference/a.png", Owner("scenes", S, f"scenes/{S}/")),
        ("assets", f"avatars/{U}.jpg", Owner("users", U, f"avatars/{U}.jpg")),
        ("internal", f"jobs/{J}/raw_output.mp4", Owner("jobs", J, f"jobs/{J}/")),
        ("internal", f"jobs/{J}/frames/0001.jpg", Owner("jobs", J, f"jobs/{J}/")),
        # not ours to judge: no table, or no layout we know
        ("assets", "topics/space/icon.png", None),
        ("assets", f"avatars/{U}.png", None),
        ("videos", "scn_short/x", None),
        ("videos", S, None),
        ("videos", "README", None),
        ("internal", f"jobs/{J}", None),
        ("internal", "tmp/x", None),
        ("exports", f"other/{S}/x", None),
    ],
)
def test_owner_of_each_key(role, key, expected):
    assert owner(role, key) == expected


def test_orphans_are_owners_without_their_row():
    seg = Owner("segments", G, f"{S}/{G}/", S)
    assert is_orphan(seg, {})
    assert is_orphan(seg, {G: "scn_eeeeeeeeeeee"})  # the row is another scene's clip
    assert not is_orphan(seg, {G: S})
    scene = Owner("scenes", S, f"{S}/")
    assert not is_orphan(scene, {S: None})
    assert is_orphan(scene, {"scn_eeeeeeeeeeee": None})
