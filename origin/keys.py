"""Typed application keys shared by the app factory and the handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from origin.db import Reachability
from origin.metrics import FastPathAnswers, HttpStats
from origin.scenecache import ReadCaches
from origin.settings import Settings

if TYPE_CHECKING:
    from origin.storage import Storage

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
# whether the pool reached Postgres last time (outages logged once, /metrics, /readyz)
DB_REACHABILITY = web.AppKey("db_reachability", Reachability)
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
READ_CACHES = web.AppKey("read_caches", ReadCaches)
# what the app's answers add up to, read by /metrics
HTTP_STATS = web.AppKey("http_stats", HttpStats)
# answers the fast path made (origin/fastpath/), read by /metrics
FAST_PATH_ANSWERS = web.AppKey("fast_path_answers", FastPathAnswers)
