"""Process configuration: one frozen Settings built from the environment at start-up.

Nothing is read at import time. Every variable is documented in README.md; an
invalid value raises ConfigError naming the variable, which the CLI prints as one
line before exiting non-zero.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.cachetags import SEPARATORS
from core.signing import (
    CloudFrontKey,
    HmacKey,
    SigningConfig,
    load_rsa_private_key,
    parse_hmac_keys,
)


class ConfigError(ValueError):
    """A configuration variable has an invalid value."""


STORAGE_KINDS = ("local", "s3")
CDN_KINDS = ("none", "cloudfront", "varnish")  # CDN ("" : cloudfront if it has an id)
SIGNING_MODES = ("none", "cloudfront", "hmac")
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


@dataclass(frozen=True)
class LadderRung:
    """One rung of the ladder as configured (LADDER): profile name (`720p`: it names
    the files and the renditions row), exact frame, video and audio bit rates (bits/s).
    Both stages encode it at these rates, so a refined rendition replaces a fast one
    bit for bit of budget."""

    name: str
    width: int
    height: int
    video_bitrate: int
    audio_bitrate: int = 128_000


#: The seed's ladder, the default of LADDER: its one definition (the encoder's rungs,
#: `workers.media.encoding.DEFAULT_RUNGS`, are derived from it).
DEFAULT_LADDER: tuple[LadderRung, ...] = (
    LadderRung("720p", 1280, 720, 1_500_000),
    LadderRung("1080p", 1920, 1080, 4_000_000),
)


@dataclass(frozen=True)
class StagePresets:
    """The x264 preset of one encoding stage (FAST_PRESET, REFINE_PRESET): a default
    and per-rung exceptions."""

    default: str
    rungs: tuple[tuple[str, str], ...] = ()

    def of(self, rung: str) -> str:
        return dict(self.rungs).get(rung, self.default)


RATE_CONTROLS = ("per-title", "abr")


@dataclass(frozen=True)
class RungCrf:
    """The constant rate factor of per-title rate control (PER_TITLE_CRF): a default and
    per-rung exceptions."""

    default: float
    rungs: tuple[tuple[str, float], ...] = ()

    def of(self, rung: str) -> float:
        return dict(self.rungs).get(rung, self.default)


#: PER_TITLE_CRF's default, chosen by measurement (bench/pertitle.py, bench/README.md
#: "Per-title rate control"): the highest rate factor whose renditions keep SSIM within
#: 0.002 of the ABR ladder's on every source of the corpus that it leaves under budget.
DEFAULT_CRF = RungCrf(23.0)

ONE_STAGE_PRESET = StagePresets("veryfast")
"""FAST_PRESET's default with REFINE=off: that ladder is the only one a clip gets. With
REFINE=on it is `ultrafast` (with the header features of the other presets,
`workers.media.encoding.ULTRAFAST_HEADERS`), chosen for time to playable: the refinement
replaces that ladder within minutes (bench/README.md, "Two stages")."""


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
    max_pixel_rate: float = 4096 * 2160 * 60  # decoded pixels per second of an upload
    host: str = "127.0.0.1"
    port: int = 8080
    log_format: str = "json"
    access_log: str = "errors"
    fast_path: bool = True
    worker_metrics_port: int = 9101
    db_pool_size: int = 10
    playlist_cache_entries: int = 4096
    read_cache_mb: int = 128  # origin/playback/caches.py `Budgets`
    # how long the read path keeps answering from what it last read from Postgres
    # while Postgres is unreachable (seconds; 0: never)
    stale_if_db_down: float = 600.0
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 5
    ffmpeg_stall_seconds: float = 120.0  # a transcode making no progress this long is killed
    timeline_interval: float = 10.0
    signing: str = "none"
    # Signed URLs (README "Signed URLs"). Secrets stay out of repr().
    signed_url_ttl: int = 21600
    cloudfront_key_pair_id: str = ""
    cloudfront_private_key: str = field(default="", repr=False)  # PEM text
    cloudfront_bind_ip: bool = False
    cloudfront_cookie_domain: str = ""
    origin_secret_header: str = "X-Origin-Secret"
    origin_secret: str = field(default="", repr=False)
    hmac_keys: tuple[HmacKey, ...] = ()
    hmac_bind_ip: bool = False
    # A scene's life (README "A scene's life"): CDN invalidation and clip removal.
    cdn_distribution_id: str = ""
    cloudfront_endpoint_url: str | None = None
    cdn_invalidation_window: float = 5.0
    cdn_query_variants: bool = False
    # the CDN in front (issue 28): "" picks CloudFront when CDN_DISTRIBUTION_ID is set;
    # "varnish" purges cache tags on CDN_PURGE_URLS (infra/varnish/)
    cdn: str = ""
    cdn_purge_urls: tuple[str, ...] = ()
    # the header naming an answer's cache tags (core/cachetags.py; "" : none) and how
    # the tags are separated in it (" " : Surrogate-Key; ",": Cache-Tag, Edge-Cache-Tag)
    cache_tag_header: str = "Surrogate-Key"
    cache_tag_separator: str = " "
    segment_removal_grace: float = 3600.0
    # Assets written through the API (issue 15, origin/assets/rules.py)
    asset_max_bytes: int = 32 * 1024**2
    asset_max_pixels: int = 50_000_000
    voice_max_seconds: float = 60.0
    # Captions (issue 27, core/captions.py): one clip's file in one language.
    captions_max_bytes: int = 512 * 1024
    captions_max_cues: int = 5000
    # Resumable uploads and webhooks (issue 18; README "Uploads and webhooks").
    upload_expiry_seconds: int = 86400
    upload_lock_seconds: float = 60.0
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = field(default="", repr=False)
    webhook_allow_private: bool = False
    webhook_timeout: float = 10.0
    webhook_retry_seconds: float = 86400.0
    webhook_backoff_base: float = 5.0
    export_max_age: float = 86400.0
    # How long history is kept (issue 29, core/retention.py; seconds): finished jobs,
    # webhook events whose deliveries ended, tus uploads that ended (past their expiry).
    job_retention: float = 7 * 86400.0
    outbox_retention: float = 7 * 86400.0
    upload_retention: float = 86400.0
    export_fetch_concurrency: int = 4
    # Loudness matching (workers/media/loudness.py): None turns it off.
    loudness_target: float | None = -16.0
    loudness_max_gain: float = 20.0
    # Thumbnails at any moment (origin/playback/stills.py).
    thumbnail_concurrency: int = 2
    thumbnail_cache_mb: int = 64
    # Bounds on what a client may hold (origin/http/connection.py, origin/http/body.py).
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_concurrent_uploads: int = 32
    # Two stages per clip (issue 17, README "Encoding"): the fast ladder published first,
    # then a `refine` job re-encodes it at the quality preset (REFINE=off: one stage).
    ladder: tuple[LadderRung, ...] = DEFAULT_LADDER
    fast_preset: StagePresets = StagePresets("ultrafast")  # ONE_STAGE_PRESET with REFINE=off
    refine: bool = True
    refine_preset: StagePresets = StagePresets("medium")
    # Per-title rate control of the final renditions (issue 26, README "Encoding"):
    # capped CRF under the ladder's VBV cap; "abr": x264's ABR at the ladder's rates.
    rate_control: str = "per-title"
    per_title_crf: RungCrf = DEFAULT_CRF
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Cross-variable rules, checked however the settings were made (from_env or
        # dataclasses.replace), each naming the variable to fix.
        if self.signing == "cloudfront":
            if not self.cloudfront_private_key:
                raise ConfigError(
                    "CLOUDFRONT_PRIVATE_KEY_FILE: required when SIGNING=cloudfront "
                    "(or put the PEM itself in CLOUDFRONT_PRIVATE_KEY)"
                )
            if not self.cloudfront_key_pair_id:
                raise ConfigError("CLOUDFRONT_KEY_PAIR_ID: required when SIGNING=cloudfront")
            if not self.cdn_base_url:
                raise ConfigError(
                    "CDN_BASE_URL: required when SIGNING=cloudfront "
                    "(policies cover {CDN_BASE_URL}/v/{sceneId}/*)"
                )
        if self.signing == "hmac" and not self.hmac_keys:
            raise ConfigError("HMAC_KEYS: required when SIGNING=hmac (comma-separated kid:secret)")
        if self.cdn == "varnish" and not self.cdn_purge_urls:
            raise ConfigError("CDN_PURGE_URLS: required when CDN=varnish (its purge endpoints)")
        if self.cdn == "cloudfront" and not self.cdn_distribution_id:
            raise ConfigError("CDN_DISTRIBUTION_ID: required when CDN=cloudfront")
        if self.origin_secret and not self.origin_secret_header:
            raise ConfigError("ORIGIN_SECRET_HEADER: required when ORIGIN_SECRET is set")
        if self.webhook_urls and not self.webhook_secret:
            raise ConfigError("WEBHOOK_SECRET: required when WEBHOOK_URLS is set (whsec_...)")
        names = {r.name for r in self.ladder}
        for var, rungs in (
            ("FAST_PRESET", self.fast_preset.rungs),
            ("REFINE_PRESET", self.refine_preset.rungs),
            ("PER_TITLE_CRF", self.per_title_crf.rungs),
        ):
            unknown = sorted({rung for rung, _ in rungs} - names)
            if unknown:
                raise ConfigError(f"{var}: {', '.join(unknown)} is not a rung of LADDER")
        if self.rate_control not in RATE_CONTROLS:
            raise ConfigError(f"RATE_CONTROL: {self.rate_control!r} is not one of per-title, abr")

    @property
    def cdn_backend(self) -> str:
        """The CDN invalidated: `varnish` (tag purges), `cloudfront` (paths) or `none`."""
        if self.cdn:
            return self.cdn
        return "cloudfront" if self.cdn_distribution_id else "none"

    @property
    def invalidate_query_variants(self) -> bool:
        """Does the CDN keep one copy of a scene document per signed query? (Then its
        invalidation paths end with `*`.) Workers run with SIGNING=none, so they are
        told with CDN_QUERY_VARIANTS."""
        return self.cdn_query_variants or self.signing != "none"

    def signing_config(self) -> SigningConfig:
        """The signing policy of this process (parses the CloudFront key)."""
        key = None
        if self.signing == "cloudfront":
            key = CloudFrontKey.from_pem(self.cloudfront_key_pair_id, self.cloudfront_private_key)
        return SigningConfig(
            mode=self.signing,  # type: ignore[arg-type]
            ttl=self.signed_url_ttl,
            cdn_base=self.cdn_base_url,
            hmac_keys=self.hmac_keys,
            hmac_bind_ip=self.hmac_bind_ip,
            cloudfront=key,
            cloudfront_bind_ip=self.cloudfront_bind_ip,
        )

    @property
    def buckets(self) -> tuple[str, str, str, str]:
        return (self.videos_bucket, self.assets_bucket, self.exports_bucket, self.internal_bucket)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `env` (default os.environ); `overrides` win over both."""
        e = os.environ if env is None else env
        d = cls()
        refine = overrides.get("refine", _choice(e, "REFINE", "on", ("on", "off")) == "on")
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
            "max_pixel_rate": _float(e, "MAX_PIXEL_RATE", d.max_pixel_rate, 1.0),
            "host": _str(e, "HOST", d.host),
            "port": _int(e, "PORT", d.port, 0, 65535),
            "log_format": _choice(e, "LOG_FORMAT", d.log_format, ("json", "text")),
            "access_log": _choice(e, "ACCESS_LOG", d.access_log, ("all", "errors", "off")),
            "fast_path": _choice(e, "FAST_PATH", "on", ("on", "off")) == "on",
            "worker_metrics_port": _int(e, "WORKER_METRICS_PORT", d.worker_metrics_port, 0, 65535),
            "db_pool_size": _int(e, "DB_POOL_SIZE", d.db_pool_size, 1, 1000),
            "playlist_cache_entries": _int(
                e, "PLAYLIST_CACHE_ENTRIES", d.playlist_cache_entries, 1
            ),
            "read_cache_mb": _int(e, "READ_CACHE_MB", d.read_cache_mb, 1, 65536),
            "stale_if_db_down": _float(e, "STALE_IF_DB_DOWN", d.stale_if_db_down, 0.0),
            "job_lease_seconds": _float(e, "JOB_LEASE_SECONDS", d.job_lease_seconds, 1.0),
            "job_max_attempts": _int(e, "JOB_MAX_ATTEMPTS", d.job_max_attempts, 1, 100),
            "ffmpeg_stall_seconds": _float(
                e, "FFMPEG_STALL_SECONDS", d.ffmpeg_stall_seconds, 0.1, 86400.0
            ),
            "timeline_interval": _float(e, "TIMELINE_INTERVAL", d.timeline_interval, 0.5),
            "signing": _choice(e, "SIGNING", d.signing, SIGNING_MODES),
            "signed_url_ttl": _int(e, "SIGNED_URL_TTL", d.signed_url_ttl, 60, 31_536_000),
            "cloudfront_key_pair_id": _key_pair_id(e, "CLOUDFRONT_KEY_PAIR_ID"),
            "cloudfront_private_key": _private_key(e),
            "cloudfront_bind_ip": _bool(e, "CLOUDFRONT_BIND_IP", d.cloudfront_bind_ip),
            "cloudfront_cookie_domain": _domain(e, "CLOUDFRONT_COOKIE_DOMAIN"),
            "origin_secret_header": _header_name(e, "ORIGIN_SECRET_HEADER", d.origin_secret_header),
            "origin_secret": _secret(e, "ORIGIN_SECRET"),
            "hmac_keys": _hmac_keys(e, "HMAC_KEYS"),
            "hmac_bind_ip": _bool(e, "HMAC_BIND_IP", d.hmac_bind_ip),
            "cdn_distribution_id": _distribution_id(e, "CDN_DISTRIBUTION_ID"),
            "cloudfront_endpoint_url": _url(e, "CLOUDFRONT_ENDPOINT_URL", "") or None,
            "cdn_invalidation_window": _float(
                e, "CDN_INVALIDATION_WINDOW", d.cdn_invalidation_window, 0.0
            ),
            "cdn_query_variants": _bool(e, "CDN_QUERY_VARIANTS", d.cdn_query_variants),
            "cdn": _choice(e, "CDN", "", ("", *CDN_KINDS)),
            "cdn_purge_urls": _urls(e, "CDN_PURGE_URLS"),
            "cache_tag_header": _tag_header(e, "CACHE_TAG_HEADER", d.cache_tag_header),
            "cache_tag_separator": SEPARATORS[
                _choice(e, "CACHE_TAG_SEPARATOR", "space", tuple(SEPARATORS))
            ],
            "segment_removal_grace": _float(
                e, "SEGMENT_REMOVAL_GRACE", d.segment_removal_grace, 0.0
            ),
            "asset_max_bytes": _int(e, "ASSET_MAX_BYTES", d.asset_max_bytes, 1024, 1024**3),
            "asset_max_pixels": _int(
                e, "ASSET_MAX_PIXELS", d.asset_max_pixels, 1_000_000, 500_000_000
            ),
            "voice_max_seconds": _float(e, "VOICE_MAX_SECONDS", d.voice_max_seconds, 1.0),
            "captions_max_bytes": _int(
                e, "CAPTIONS_MAX_BYTES", d.captions_max_bytes, 1024, 16 * 1024**2
            ),
            "captions_max_cues": _int(e, "CAPTIONS_MAX_CUES", d.captions_max_cues, 1, 100_000),
            "upload_expiry_seconds": _int(
                e, "UPLOAD_EXPIRY_SECONDS", d.upload_expiry_seconds, 60, 30 * 86400
            ),
            "upload_lock_seconds": _float(e, "UPLOAD_LOCK_SECONDS", d.upload_lock_seconds, 1.0),
            "webhook_urls": _webhook_urls(e, "WEBHOOK_URLS"),
            "webhook_secret": _webhook_secret(e, "WEBHOOK_SECRET"),
            "webhook_allow_private": _bool(e, "WEBHOOK_ALLOW_PRIVATE", d.webhook_allow_private),
            "webhook_timeout": _float(e, "WEBHOOK_TIMEOUT", d.webhook_timeout, 0.1),
            "webhook_retry_seconds": _float(
                e, "WEBHOOK_RETRY_SECONDS", d.webhook_retry_seconds, 0.0
            ),
            "job_retention": _float(e, "JOB_RETENTION", d.job_retention, 60.0),
            "outbox_retention": _float(e, "OUTBOX_RETENTION", d.outbox_retention, 60.0),
            "upload_retention": _float(e, "UPLOAD_RETENTION", d.upload_retention, 60.0),
            "webhook_backoff_base": _float(e, "WEBHOOK_BACKOFF_BASE", d.webhook_backoff_base, 0.0),
            "export_max_age": _float(e, "EXPORT_MAX_AGE", d.export_max_age, 0.0),
            "export_fetch_concurrency": _int(
                e, "EXPORT_FETCH_CONCURRENCY", d.export_fetch_concurrency, 1, 64
            ),
            "loudness_target": _loudness_target(e, "LOUDNESS_TARGET", d.loudness_target),
            "loudness_max_gain": _float(e, "LOUDNESS_MAX_GAIN", d.loudness_max_gain, 0.0, 60.0),
            "thumbnail_concurrency": _int(
                e, "THUMBNAIL_CONCURRENCY", d.thumbnail_concurrency, 1, 64
            ),
            "thumbnail_cache_mb": _int(e, "THUMBNAIL_CACHE_MB", d.thumbnail_cache_mb, 0, 65536),
            "header_timeout": _float(e, "HEADER_TIMEOUT", d.header_timeout, 0.1, 3600.0),
            "body_idle_timeout": _float(e, "BODY_IDLE_TIMEOUT", d.body_idle_timeout, 0.1, 3600.0),
            "max_concurrent_uploads": _int(
                e, "MAX_CONCURRENT_UPLOADS", d.max_concurrent_uploads, 1, 10_000
            ),
            "ladder": _ladder(e, "LADDER", d.ladder),
            "refine": refine,
            "fast_preset": _presets(
                e, "FAST_PRESET", d.fast_preset if refine else ONE_STAGE_PRESET
            ),
            "refine_preset": _presets(e, "REFINE_PRESET", d.refine_preset),
            "rate_control": _choice(e, "RATE_CONTROL", d.rate_control, RATE_CONTROLS),
            "per_title_crf": _crf(e, "PER_TITLE_CRF", d.per_title_crf),
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


def _float(
    e: Mapping[str, str],
    name: str,
    default: float,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    raw = _str(e, name, str(default))
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if v != v or (lo is not None and v < lo):
        raise ConfigError(f"{name}: {raw!r} must be >= {lo}")
    if hi is not None and not v <= hi:
        raise ConfigError(f"{name}: {raw!r} must be <= {hi}")
    return v


def _loudness_target(e: Mapping[str, str], name: str, default: float | None) -> float | None:
    """Integrated loudness in LUFS between -70 and -5 (ffmpeg loudnorm's range), or
    `off`."""
    if _str(e, name, "").lower() == "off":
        return None
    return _float(e, name, -16.0 if default is None else default, -70.0, -5.0)


_RUNG_RE = re.compile(
    r"^([0-9]{3,4}p):([0-9]{2,5})x([0-9]{2,5}):([0-9]+)([km]?)(?:/([0-9]+)([km]?))?$"
)
_UNIT = {"": 1, "k": 1000, "m": 1_000_000}


def _ladder(
    e: Mapping[str, str], name: str, default: tuple[LadderRung, ...]
) -> tuple[LadderRung, ...]:
    """`720p:1280x720:1500k,1080p:1920x1080:4000k`: profile, frame (even sides), video
    bit rate and optionally `/audio` bit rate (default 128k), lowest rung first."""
    raw = _str(e, name, "")
    if not raw:
        return default
    rungs: list[LadderRung] = []
    for item in (p.strip().lower() for p in raw.split(",")):
        m = _RUNG_RE.fullmatch(item)
        if m is None:
            raise ConfigError(
                f"{name}: {item!r} is not profile:WIDTHxHEIGHT:bitrate[/audio] (720p:1280x720:1500k)"
            )
        width, height = int(m[2]), int(m[3])
        video = int(m[4]) * _UNIT[m[5]]
        audio = int(m[6]) * _UNIT[m[7]] if m[6] else 128_000
        if width % 2 or height % 2:
            raise ConfigError(f"{name}: {item!r}: width and height must be even")
        if not (100_000 <= video <= 100_000_000 and 32_000 <= audio <= 512_000):
            raise ConfigError(f"{name}: {item!r}: video 100k-100m, audio 32k-512k bits/s")
        rungs.append(LadderRung(m[1], width, height, video, audio))
    if len({r.name for r in rungs}) != len(rungs):
        raise ConfigError(f"{name}: a profile appears twice")
    return tuple(sorted(rungs, key=lambda r: (r.width * r.height, r.video_bitrate)))


def _presets(e: Mapping[str, str], name: str, default: StagePresets) -> StagePresets:
    """`medium` or `medium,1080p=slow`: the stage's x264 preset, then per-rung ones."""
    raw = _str(e, name, "")
    if not raw:
        return default
    base = default.default
    rungs: list[tuple[str, str]] = []
    for item in (p.strip().lower() for p in raw.split(",")):
        rung, sep, preset = item.rpartition("=")
        if preset not in X264_PRESETS:
            raise ConfigError(
                f"{name}: {preset!r} is not an x264 preset ({', '.join(X264_PRESETS)})"
            )
        if not sep:
            base = preset
        elif re.fullmatch(r"[0-9]{3,4}p", rung):
            rungs.append((rung, preset))
        else:
            raise ConfigError(f"{name}: {rung!r} is not a rung profile (720p)")
    return StagePresets(base, tuple(rungs))


def _crf(e: Mapping[str, str], name: str, default: RungCrf) -> RungCrf:
    """`23` or `23,1080p=24.5`: x264's rate factor (0-51), then per-rung ones."""
    raw = _str(e, name, "")
    if not raw:
        return default
    base = default.default
    rungs: list[tuple[str, float]] = []
    for item in (p.strip().lower() for p in raw.split(",")):
        rung, sep, text = item.rpartition("=")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 <= value <= 51:
            raise ConfigError(f"{name}: {text!r} is not a rate factor from 0 to 51")
        if not sep:
            base = value
        elif re.fullmatch(r"[0-9]{3,4}p", rung):
            rungs.append((rung, value))
        else:
            raise ConfigError(f"{name}: {rung!r} is not a rung profile (720p)")
    return RungCrf(base, tuple(rungs))


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


def _bool(e: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _str(e, name, "").lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (true/false)")


_HEADER_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_DOMAIN_RE = re.compile(r"\.?[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*")


def _header_name(e: Mapping[str, str], name: str, default: str) -> str:
    v = _str(e, name, default)
    if not _HEADER_RE.fullmatch(v):
        raise ConfigError(f"{name}: {v!r} is not an HTTP header name")
    return v


def _tag_header(e: Mapping[str, str], name: str, default: str) -> str:
    """An HTTP header name, or `off` (no cache tags: "")."""
    if _str(e, name, default).lower() == "off":
        return ""
    return _header_name(e, name, default)


def _urls(e: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs (e.g. every Varnish's purge endpoint)."""
    urls = _list(e, name, ())
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{name}: {url!r} is not an http(s) URL")
    return urls


def _secret(e: Mapping[str, str], name: str) -> str:
    v = _str(e, name, "")
    if v and (len(v) < 16 or not v.isascii() or not v.isprintable()):
        raise ConfigError(f"{name}: must be at least 16 printable ASCII characters")
    return v


def _domain(e: Mapping[str, str], name: str) -> str:
    v = _str(e, name, "")
    if v and (len(v) > 253 or not _DOMAIN_RE.fullmatch(v)):
        raise ConfigError(f"{name}: {v!r} is not a domain name")
    return v


def _key_pair_id(e: Mapping[str, str], name: str) -> str:
    v = _str(e, name, "")
    if v and not re.fullmatch(r"[A-Za-z0-9]{1,128}", v):
        raise ConfigError(f"{name}: {v!r} is not a CloudFront key id (letters and digits)")
    return v


def _distribution_id(e: Mapping[str, str], name: str) -> str:
    v = _str(e, name, "")
    if v and not re.fullmatch(r"[A-Z0-9]{1,64}", v):
        raise ConfigError(f"{name}: {v!r} is not a CloudFront distribution id (A-Z, 0-9)")
    return v


def _private_key(e: Mapping[str, str]) -> str:
    """The CloudFront private key PEM, from CLOUDFRONT_PRIVATE_KEY_FILE (a path) or
    CLOUDFRONT_PRIVATE_KEY (the PEM itself; literal \\n escapes are accepted)."""
    path = _str(e, "CLOUDFRONT_PRIVATE_KEY_FILE", "")
    inline = e.get("CLOUDFRONT_PRIVATE_KEY", "").strip()
    if path and inline:
        raise ConfigError(
            "CLOUDFRONT_PRIVATE_KEY_FILE: set either it or CLOUDFRONT_PRIVATE_KEY, not both"
        )
    if path:
        name = "CLOUDFRONT_PRIVATE_KEY_FILE"
        try:
            pem = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"{name}: cannot read {path!r}: {reason}") from None
    elif inline:
        name = "CLOUDFRONT_PRIVATE_KEY"
        pem = inline if "\n" in inline else inline.replace("\\n", "\n")
    else:
        return ""
    try:
        load_rsa_private_key(pem)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return pem


def _hmac_keys(e: Mapping[str, str], name: str) -> tuple[HmacKey, ...]:
    try:
        return parse_hmac_keys(e.get(name, ""))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _webhook_urls(e: Mapping[str, str], name: str) -> tuple[str, ...]:
    urls = _list(e, name, ())
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{name}: {url!r} is not an http(s) URL")
        if parsed.username or parsed.password:
            raise ConfigError(f"{name}: {url!r} carries credentials; sign with WEBHOOK_SECRET")
    return urls


def _webhook_secret(e: Mapping[str, str], name: str) -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 24 to 64 random bytes."""
    v = _str(e, name, "")
    if not v:
        return v
    try:
        raw = base64.b64decode(v.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ConfigError(f"{name}: not whsec_ followed by base64") from None
    if not v.startswith("whsec_") or not 24 <= len(raw) <= 64:
        raise ConfigError(f"{name}: must be whsec_ and base64 of 24 to 64 bytes")
    return v
