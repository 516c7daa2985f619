"""Triage of a failed ffmpeg run from its bounded log: the upload's fault or ours."""

from __future__ import annotations

from typing import Any

from workers.ffmpeg import TranscodeFailed, _BoundedLog, _failure
from workers.probe import BadInput


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
