"""Process configuration: one frozen Settings built from the environment at start-up.

Nothing is read at import time. Every variable is documented in README.md; an
invalid value raises ConfigError naming the variable, which the CLI prints as one
line before exiting non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A configuration variable has an invalid value."""


STORAGE_KINDS = ("local", "s3")
SIGNING_MODES = ("none", "cloudfront", "hmac")


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://localhost/storyforge"
    storage: str = "local"
    storage_root: Path = Path(".storyforge/storage")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    videos_bucket: str = "storyforge-videos"
    assets_bucket: str = "storyforge-assets"
    exports_bucket: str = "storyforge-exports"
    internal_bucket: str = "storyforge-internal"
    cdn_base_url: str = ""
    api_tokens: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ("*",)
    max_upload_bytes: int = 2 * 1024**3
    max_clip_seconds: float = 600.0
    host: str = "127.0.0.1"
    port: int = 8080
    log_format: str = "json"
    db_pool_size: int = 10
    playlist_cache_entries: int = 4096
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 5
    timeline_interval: float = 10.0
    signing: str = "none"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def buckets(self) -> tuple[str, str, str, str]:
        return (self.videos_bucket, self.assets_bucket, self.exports_bucket, self.internal_bucket)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `env` (default os.environ); `overrides` win over both."""
        e = os.environ if env is None else env
        d = cls()
        values: dict[str, object] = {
            "database_url": _str(e, "DATABASE_URL", d.database_url),
            "storage": _choice(e, "STORAGE", d.storage, STORAGE_KINDS),
            "storage_root": Path(_str(e, "STORAGE_ROOT", str(d.storage_root))),
            "s3_endpoint_url": _str(e, "S3_ENDPOINT_URL", "") or None,
            "s3_region": _str(e, "S3_REGION", d.s3_region),
            "s3_access_key": _str(e, "S3_ACCESS_KEY_ID", "") or None,
            "s3_secret_key": _str(e, "S3_SECRET_ACCESS_KEY", "") or None,
            "videos_bucket": _bucket(e, "VIDEOS_BUCKET", d.videos_bucket),
            "assets_bucket": _bucket(e, "ASSETS_BUCKET", d.assets_bucket),
            "exports_bucket": _bucket(e, "EXPORTS_BUCKET", d.exports_bucket),
            "internal_bucket": _bucket(e, "INTERNAL_BUCKET", d.internal_bucket),
            "cdn_base_url": _url(e, "CDN_BASE_URL", d.cdn_base_url),
            "api_tokens": _list(e, "API_TOKENS", d.api_tokens),
            "cors_origins": _list(e, "CORS_ORIGINS", d.cors_origins),
            "max_upload_bytes": _int(e, "MAX_UPLOAD_BYTES", d.max_upload_bytes, 1),
            "max_clip_seconds": _float(e, "MAX_CLIP_SECONDS", d.max_clip_seconds, 0.1),
            "host": _str(e, "HOST", d.host),
            "port": _int(e, "PORT", d.port, 0, 65535),
            "log_format": _choice(e, "LOG_FORMAT", d.log_format, ("json", "text")),
            "db_pool_size": _int(e, "DB_POOL_SIZE", d.db_pool_size, 1, 1000),
            "playlist_cache_entries": _int(
                e, "PLAYLIST_CACHE_ENTRIES", d.playlist_cache_entries, 1
            ),
            "job_lease_seconds": _float(e, "JOB_LEASE_SECONDS", d.job_lease_seconds, 1.0),
            "job_max_attempts": _int(e, "JOB_MAX_ATTEMPTS", d.job_max_attempts, 1, 100),
            "timeline_interval": _float(e, "TIMELINE_INTERVAL", d.timeline_interval, 0.5),
            "signing": _choice(e, "SIGNING", d.signing, SIGNING_MODES),
        }
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.storage == "s3" and not settings.s3_region:
            raise ConfigError("S3_REGION: required when STORAGE=s3")
        return settings


def _str(e: Mapping[str, str], name: str, default: str) -> str:
    return e.get(name, default).strip()


def _choice(e: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    v = _str(e, name, default).lower()
    if v not in allowed:
        raise ConfigError(f"{name}: {v!r} is not one of {', '.join(allowed)}")
    return v


def _int(
    e: Mapping[str, str], name: str, default: int, lo: int | None = None, hi: int | None = None
) -> int:
    raw = _str(e, name, str(default))
    try:
        v = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{name}: {v} is outside [{lo}, {hi if hi is not None else 'inf'}]")
    return v


def _float(e: Mapping[str, str], name: str, default: float, lo: float | None = None) -> float:
    raw = _str(e, name, str(default))
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if v != v or (lo is not None and v < lo):
        raise ConfigError(f"{name}: {raw!r} must be >= {lo}")
    return v


def _list(e: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if name not in e:
        return default
    return tuple(p.strip() for p in e[name].split(",") if p.strip())


def _bucket(e: Mapping[str, str], name: str, default: str) -> str:
    v = _str(e, name, default)
    ok = 3 <= len(v) <= 63 and all(c.islower() or c.isdigit() or c in ".-" for c in v)
    if not ok or v[0] in ".-" or v[-1] in ".-":
        raise ConfigError(f"{name}: {v!r} is not a valid S3 bucket name")
    return v


def _url(e: Mapping[str, str], name: str, default: str) -> str:
    v = _str(e, name, default).rstrip("/")
    if v and not (v.startswith("https://") or v.startswith("http://")):
        raise ConfigError(f"{name}: {v!r} must start with http:// or https://")
    return v
