"""Clips as the stitcher sees them (core.playlists.Clip), built from EXTINF lists, for
the unit tests of what is placed on a scene's timeline (chapters, thumbnails)."""

from __future__ import annotations

from collections.abc import Sequence

from core.playlists import Clip, Rendition

LADDER = {"720p": (1280, 720), "1080p": (1920, 1080)}


def timeline_clip(
    segment_id: str,
    durations: Sequence[float],
    *,
    frame_rate: float = 30.0,
    profiles: Sequence[str] = ("720p", "1080p"),
) -> Clip:
    """A clip whose renditions (`profiles` of LADDER) all have these EXTINF values."""
    renditions = {
        p: Rendition(
            profile=p,
            width=LADDER[p][0],
            height=LADDER[p][1],
            frame_rate=frame_rate,
            codecs="avc1.4d401f,mp4a.40.2",
            durations=tuple(durations),
            sizes=tuple(100_000 for _ in durations),
            bandwidth_peak=1_000_000,
            bandwidth_average=800_000,
        )
        for p in profiles
    }
    return Clip(segment_id, sum(durations), renditions)
