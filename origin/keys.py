"""Typed application keys shared by the app factory and the handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from core.db import Reachability
from core.settings import Settings

if TYPE_CHECKING:
    from core.cdn import Invalidations
    from core.storage import Storage
    from origin.assets.service import Processor
    from origin.http.auth import SigningState
    from origin.http.body import UploadSlots
    from origin.http.drain import Draining
    from origin.http.stats import FastPathAnswers, HttpStats
    from origin.ingest.tus_service import ParkedLeases
    from origin.playback.caches import ReadCaches
    from origin.playback.stills import StillsState

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
# whether the pool reached Postgres last time (outages logged once, /metrics, /readyz)
DB_REACHABILITY = web.AppKey("db_reachability", Reachability)
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
READ_CACHES: web.AppKey[ReadCaches] = web.AppKey("read_caches")
# what the app's answers add up to, read by /metrics
HTTP_STATS: web.AppKey[HttpStats] = web.AppKey("http_stats")
# answers the fast path made (origin/http/fastpath.py), read by /metrics
FAST_PATH_ANSWERS: web.AppKey[FastPathAnswers] = web.AppKey("fast_path_answers")
# assets written through the API, a few at a time (origin/assets/service.py)
ASSET_PROCESSOR: web.AppKey[Processor] = web.AppKey("asset_processor")
# upload bodies read at once (origin/http/body.py)
UPLOAD_SLOTS: web.AppKey[UploadSlots] = web.AppKey("upload_slots")
# the signing policy and guard counters (origin/http/auth.py)
SIGNING: web.AppKey[SigningState] = web.AppKey("signing")
# requests a stopping process still owes (origin/http/drain.py)
DRAINING: web.AppKey[Draining] = web.AppKey("draining")
# thumbnails at a moment: the frame grabs and their caches (origin/playback/stills.py)
STILLS: web.AppKey[StillsState] = web.AppKey("stills")
# tag purges the origin sends itself (CDN=varnish; else None): core/cdn.py
PURGES: web.AppKey[Invalidations | None] = web.AppKey("purges")
# tus leases parked between a process's PATCHes (origin/ingest/tus_service.py)
PARKED_LEASES: web.AppKey[ParkedLeases] = web.AppKey("parked_leases")
