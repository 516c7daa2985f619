"""Triage of a failed ffmpeg run from its bounded log (the upload's fault or ours), and
the checks on the playlists ffmpeg wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from workers.media.encoding import DEFAULT_RUNGS, parse_progress_lines
from workers.media.ffmpeg import (
    TranscodeFailed,
    _BoundedLog,
    _failure,
    _read_rendition,
    progress_mark,
)
from workers.media.probe import BadInput


def _log(*lines: str) -> Any:
    log = _BoundedLog(head=2, tail=3)
    for ln in lines:
        log.add(ln)
    return log


def test_bounded_log_keeps_head_and_tail() -> None:
    log = _log(*(f"line {i}" for i in range(10)))
    assert log.text() == "line 0\nline 1\n... 5 lines omitted ...\nline 7\nline 8\nline 9\n"
    assert log.last(2) == ["line 8", "line 9"]


def test_failure_triage() -> None:
    bad = _failure(
        1,
        _log(
            "[h264 @ 0x1] error while decoding MB 3 4",
            "file:/in.mp4: Invalid data found when processing input",
        ),
    )
    assert isinstance(bad, BadInput)
    assert (
        bad.reason
        == "the video could not be decoded: file:/in.mp4: Invalid data found when processing input"
    )
    disk = _failure(
        1,
        _log(
            "[hls @ 0x1] Invalid data found when processing input",
            "/out/720p_0003.ts: No space left on device",
        ),
    )
    assert isinstance(disk, TranscodeFailed) and "No space left on device" in disk.reason
    killed = _failure(-9, _log("frame=1"))
    assert isinstance(killed, TranscodeFailed) and killed.reason.startswith(
        "ffmpeg killed by signal 9"
    )
    other = _failure(187, _log("Conversion failed!"))
    assert isinstance(other, TranscodeFailed)
    assert (
        other.reason == "ffmpeg exited with 187: Conversion failed!"
        and other.log_tail == "Conversion failed!"
    )


# ------------------------------------------- reading back what ffmpeg wrote

PLAYLIST = (
    "#EXTM3U\n#EXT-X-TARGETDURATION:4\n"
    "#EXTINF:4.000000,\n720p_0001.ts\n#EXTINF:2.000000,\n{second}\n#EXT-X-ENDLIST\n"
)


@pytest.mark.parametrize(
    ("second", "files"),
    [
        ("720p_0002.ts", ["720p_0001.ts", "720p_0002.ts", "720p_0003.ts"]),  # one not listed
        ("720p_0003.ts", ["720p_0001.ts", "720p_0003.ts"]),  # a gap
        ("../720p_0002.ts", ["720p_0001.ts"]),  # not a name ffmpeg writes
    ],
)
def test_rendition_playlist_must_list_every_segment_written(
    tmp_path: Path, second: str, files: list[str]
) -> None:
    (tmp_path / "720p.m3u8").write_text(PLAYLIST.format(second=second))
    for name in files:
        (tmp_path / name).write_bytes(b"\x47" * 188)
    with pytest.raises(TranscodeFailed, match="does not list the segments ffmpeg wrote"):
        asyncio.run(_read_rendition(tmp_path, DEFAULT_RUNGS[0], timeout=5))


def test_unfinished_rendition_playlist_is_a_transcode_failure(tmp_path: Path) -> None:
    text = PLAYLIST.format(second="720p_0002.ts").replace("#EXT-X-ENDLIST\n", "")
    (tmp_path / "720p.m3u8").write_text(text)
    with pytest.raises(TranscodeFailed, match=r"^720p.m3u8: no #EXT-X-ENDLIST"):
        asyncio.run(_read_rendition(tmp_path, DEFAULT_RUNGS[0], timeout=5))


def test_progress_marks_change_only_when_ffmpeg_advances() -> None:
    blocks = parse_progress_lines(
        [
            *("frame=0", "out_time_us=N/A", "total_size=N/A", "progress=continue"),
            *("frame=12", "out_time_us=400000", "total_size=48", "progress=continue"),
            # the same figures again: ffmpeg reports, but reads nothing new (input stalled)
            *("frame=12", "out_time_us=400000", "total_size=48", "progress=continue"),
            # a muxer writing its trailer: bytes advance, frames do not
            *("frame=12", "out_time_us=400000", "total_size=1024", "progress=end"),
        ]
    )
    marks = [progress_mark(b) for b in blocks]
    assert marks[0] != marks[1]
    assert marks[1] == marks[2]
    assert marks[2] != marks[3]
