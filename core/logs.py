"""Structured logging: JSON lines in production, readable text in dev, with the
request id (or job id) of the current task attached to every record."""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# 16 hex digits: 8 random per process, then a counter (cheaper than 8 random bytes
# per request, and still unique across the origin's processes)
_rid_prefix = ""
_rid_counter = itertools.count()


def new_request_id(incoming: str | None = None) -> str:
    """The id of a request: the client's X-Request-Id when it is a sane token, else
    a new one."""
    global _rid_prefix
    if incoming and _VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    if not _rid_prefix:
        _rid_prefix = secrets.token_hex(4)
    return f"{_rid_prefix}{next(_rid_counter) & 0xFFFFFFFF:08x}"


def log_request(
    logger: logging.Logger, rid: str, method: str, path: str, status: int, seconds: float
) -> None:
    """One access-log record, with the request's id."""
    token = request_id.set(rid)
    try:
        logger.info("%s %s %d", method, path, status, extra={"sf_ms": round(seconds * 1000, 2)})
    finally:
        request_id.reset(token)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        for key, value in record.__dict__.items():
            if key.startswith("sf_"):
                out[key[3:]] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k[3:]}={v}" for k, v in record.__dict__.items() if k.startswith("sf_"))
        rid = request_id.get()
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname[0]} {record.name}"
        line = f"{base} [{rid}] {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(fmt: str = "json", level: int = logging.INFO) -> None:
    """Send every `storyforge.*` and aiohttp record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
