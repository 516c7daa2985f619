"""`tus_service.ParkedLeases`, the process's shortcut past a PATCH's claim: an entry is
given once, only at its offset, only while fresh and while the upload is not about to
expire; at most `limit` are kept, the oldest dropped first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.uploads import Lease, Upload
from origin.ingest.tus_service import ParkedLeases


def _upload(upload_id: str, received: int = 100, *, expires_in: float = 3600) -> Upload:
    return Upload(
        id=upload_id,
        scene_id="scn_x",
        contributor_id="usr_x",
        sequence=None,
        filename=None,
        content_type="video/mp4",
        metadata="",
        length=1000,
        received=received,
        segment_id="seg_x",
        job_id="job_x",
        multipart_id="m",
        part_size=5 << 20,
        parts=(),
        pending=(),
        status="open",
        error=None,
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
    )


def _parked(upload_id: str, part: int = 7) -> Lease:
    lease = Lease(None, upload_id, uuid.uuid4(), 60.0, 1)  # type: ignore[arg-type]
    lease.parked_part = part
    return lease


def test_given_once_and_only_at_its_offset():
    parked = ParkedLeases(60.0)
    lease, upload = _parked("upl_a"), _upload("upl_a", 100)
    parked.put(lease, upload)
    assert parked.take("upl_a", 100) == (lease.token, upload, 7)
    assert parked.take("upl_a", 100) is None  # given once
    parked.put(lease, upload)
    assert parked.take("upl_a", 99) is None  # another offset: dropped, the claim decides
    assert parked.take("upl_a", 100) is None


def test_not_kept_unless_parked_open_and_unfinished():
    parked = ParkedLeases(60.0)
    unparked = _parked("upl_a")
    unparked.parked_part = None
    parked.put(unparked, _upload("upl_a"))
    parked.put(_parked("upl_b"), replace(_upload("upl_b"), received=1000))  # whole
    parked.put(_parked("upl_c"), replace(_upload("upl_c"), status="completed"))
    assert [parked.take(u, r) for u, r in (("upl_a", 100), ("upl_b", 1000), ("upl_c", 100))] == [
        None,
        None,
        None,
    ]


def test_stale_or_nearly_expired_entries_are_not_given():
    now = [1000.0]
    parked = ParkedLeases(60.0, clock=lambda: now[0])
    parked.put(_parked("upl_a"), _upload("upl_a"))
    now[0] += 60.5
    assert parked.take("upl_a", 100) is None
    parked.put(_parked("upl_a"), _upload("upl_a"))
    now[0] += 59.5
    assert parked.take("upl_a", 100) is not None
    parked = ParkedLeases(60.0)
    parked.put(_parked("upl_b"), _upload("upl_b", expires_in=30))  # within the minute
    assert parked.take("upl_b", 100) is None


def test_at_most_limit_entries_the_oldest_dropped_first():
    parked = ParkedLeases(60.0, limit=2)
    for name in ("upl_a", "upl_b", "upl_c"):
        parked.put(_parked(name), _upload(name))
    parked.put(_parked("upl_b"), _upload("upl_b"))  # parked again: now the newest
    parked.put(_parked("upl_d"), _upload("upl_d"))
    assert [parked.take(u, 100) is not None for u in ("upl_a", "upl_b", "upl_c", "upl_d")] == [
        False,
        True,
        False,
        True,
    ]
