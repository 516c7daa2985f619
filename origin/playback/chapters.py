"""The scene's contributor chapters: `/v/{sceneId}/chapters.vtt`, one WebVTT cue per
clip on the stitched timeline, titled with the clip's sequence and its contributor's
username. Pure: the text is built from the same clips, and the same offsets
(`playlists.timeline_ms`), as the stitched playlists and storyboard.

WebVTT (W3C WebVTT, §4.1 file structure, §4.2.2 cue text): a cue is a timing line and
payload lines, ended by a blank line; in the payload ``&``, ``<`` and
``>`` are escaped as character references, which also keeps ``-->`` out of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.playlists import Clip, timeline_ms, vtt_time

# C0/C1 controls and line terminators would end or corrupt a cue (WebVTT §4.1)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def cue_text(text: str) -> str:
    """One line of WebVTT cue text: controls, line breaks and runs of white space become
    one space, ``&``, ``<`` and ``>`` are escaped (WebVTT §4.2.2)."""
    flat = " ".join(_CONTROLS.sub(" ", text).split())
    return "".join(_ESCAPES.get(c, c) for c in flat)


def chapter_title(sequence: int, username: str) -> str:
    """A chapter's title: the clip's sequence in its scene and who made it."""
    return f"{sequence}. {username}"


def chapters_vtt(clips: Sequence[Clip], titles: Sequence[str]) -> str:
    """The chapters WebVTT of a stitched scene: cue `i` spans clip `i` on the scene
    timeline (the sum of the earlier clips' EXTINFs, where the stitched playlist puts
    the clip's first segment, to the millisecond) and reads `titles[i]`."""
    if len(clips) != len(titles):
        raise ValueError(f"{len(clips)} clips but {len(titles)} titles")
    bounds = timeline_ms(clips)
    blocks = ["WEBVTT"]
    for i, title in enumerate(titles):
        start, end = bounds[i], bounds[i + 1]
        blocks.append(f"{vtt_time(start)} --> {vtt_time(end)}\n{cue_text(title)}")
    return "\n\n".join(blocks) + "\n"
