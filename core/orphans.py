"""Which row an object belongs to, read from its key alone (the inverse of
core/layout.py's keys), for `storyforge gc`. Pure.

An object's owner is the smallest prefix whose row must exist for the object to be
kept: a clip's folder needs its segment row, everything else of a scene its scene row,
an avatar its user row, a job's folder its job row. Keys in no layout we know (topic
icons, which have no rows, or anything an operator put there) have no owner and are
never collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core import layout

Role = Literal["videos", "assets", "exports", "internal"]
Table = Literal["scenes", "segments", "users", "jobs"]


@dataclass(frozen=True, order=True)
class Owner:
    table: Table
    id: str
    prefix: str  # every object of the owner; deleted as a whole
    scene_id: str | None = None  # for a segment: the scene its folder is under


def owner(role: Role, key: str) -> Owner | None:
    """The row `key` needs in the bucket of `role`, or None (not ours to judge)."""
    parts = key.split("/")
    if role in ("videos", "exports"):
        scene = parts[0]
        if not layout.is_id(scene, "scn") or len(parts) < 2:
            return None
        if role == "videos" and len(parts) >= 3 and layout.is_id(parts[1], "seg"):
            return Owner("segments", parts[1], layout.segment_prefix(scene, parts[1]), scene)
        return Owner("scenes", scene, layout.scene_prefix(scene))
    if role == "assets":
        if len(parts) >= 3 and parts[0] == "scenes" and layout.is_id(parts[1], "scn"):
            return Owner("scenes", parts[1], layout.scene_assets_prefix(parts[1]))
        user = parts[1].removesuffix(".jpg") if len(parts) == 2 else ""
        if parts[0] == "avatars" and key == layout.avatar_key(user) and layout.is_id(user, "usr"):
            return Owner("users", user, key)
        return None
    if len(parts) >= 3 and parts[0] == "jobs" and layout.is_id(parts[1], "job"):
        return Owner("jobs", parts[1], layout.job_prefix(parts[1]))
    return None


def is_orphan(found: Owner, rows: dict[str, str | None]) -> bool:
    """`rows`: the ids of `found.table` that exist (for segments: id -> scene id)."""
    if found.id not in rows:
        return True
    return found.table == "segments" and rows[found.id] != found.scene_id
