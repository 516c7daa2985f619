"""The tus 1.0.0 resumable upload protocol, pure: version and header parsing,
`Upload-Metadata` (de)coding, `Upload-Checksum`, the fields of every answer, and how
an upload's bytes are cut into storage parts. Section names are those of the tus
1.0.0 specification (tus.io/protocols/resumable-upload), "Core Protocol" unless
another extension is named. No I/O: origin/ingest/tus_service.py and the routes use it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

VERSION = "1.0.0"
# "Tus-Extension": what this server implements besides the core protocol
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")  # Checksum: sha1 is required
OFFSET_TYPE = "application/offset+octet-stream"
METADATA_KEYS = ("sceneId", "contributor", "sequence", "filename", "filetype")
MAX_METADATA_CHARS = 4096
_INT_RE = re.compile(r"[0-9]{1,19}")
_KEY_RE = re.compile(r"[!-+\--~]+")  # printable ASCII but space and comma


class TusError(Exception):
    """A request the protocol refuses: its HTTP status, a code and a readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_version(value: str | None) -> None:
    """Tus-Resumable (§Headers): every request but OPTIONS names the version; one we
    do not speak is 412 Precondition Failed, answered with Tus-Version."""
    if value is None:
        raise TusError(412, "tus_version", f"Tus-Resumable: {VERSION} is required")
    if value.strip() != VERSION:
        raise TusError(412, "tus_version", f"Tus-Resumable {value.strip()!r} is not {VERSION}")


def parse_int(name: str, value: str | None) -> int:
    """Upload-Offset / Upload-Length: a non-negative integer (400 otherwise)."""
    if value is None:
        raise TusError(400, "bad_request", f"{name} is required")
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        raise TusError(400, "bad_request", f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str]:
    """Upload-Metadata (Creation §Upload-Metadata): comma-separated `key base64value`
    pairs, unique keys without spaces or commas, values Base64 (may be empty). Values
    must be UTF-8 text without NUL here. 400 on anything else."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_CHARS:
        raise TusError(400, "bad_request", "Upload-Metadata is too long")
    out: dict[str, str] = {}
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _KEY_RE.fullmatch(key):
            raise TusError(400, "bad_request", f"Upload-Metadata key {key!r} is malformed")
        if key in out:
            raise TusError(400, "bad_request", f"Upload-Metadata key {key!r} appears twice")
        try:
            out[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise TusError(
                400, "bad_request", f"Upload-Metadata value of {key!r} is not Base64 UTF-8"
            ) from None
        if "\x00" in out[key]:  # kept in PostgreSQL text, which cannot hold it
            raise TusError(400, "bad_request", f"Upload-Metadata value of {key!r} contains NUL")
    return out


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The Upload-Metadata field of `metadata` (HEAD answers repeat it)."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


@dataclass(frozen=True)
class Checksum:
    """Upload-Checksum (Checksum extension): the algorithm and the digest the body of
    the PATCH must have."""

    algorithm: str
    digest: bytes

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm, usedforsecurity=False)


def parse_checksum(value: str | None) -> Checksum | None:
    """`algorithm base64digest`; an algorithm we do not support is 400 (Checksum
    §Upload-Checksum), a malformed value too."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(400, "bad_request", f"checksum algorithm {algorithm!r} is not supported")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise TusError(400, "bad_request", "Upload-Checksum digest is not Base64") from None
    if len(digest) != hashlib.new(algorithm, usedforsecurity=False).digest_size:
        raise TusError(400, "bad_request", f"Upload-Checksum is not a {algorithm} digest")
    return Checksum(algorithm, digest)


def effective_method(method: str, override: str | None) -> str:
    """X-HTTP-Method-Override (§Headers) names the method for clients that cannot send
    PATCH or DELETE; it is honoured on POST only."""
    if method == "POST" and override:
        return override.strip().upper()
    return method


def answer_fields(expires: datetime | None = None) -> dict[str, str]:
    """What every tus answer carries: Tus-Resumable, and Upload-Expires (Expiration
    extension, an RFC 9110 HTTP-date) while the upload can still expire."""
    fields = {"Tus-Resumable": VERSION, "Cache-Control": "no-store"}
    if expires is not None:
        fields["Upload-Expires"] = format_datetime(expires, usegmt=True)
    return fields


def discovery_fields(max_size: int) -> dict[str, str]:
    """The answer to OPTIONS (§OPTIONS): versions, extensions, the size limit and the
    checksum algorithms."""
    return {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def part_size(length: int, min_part: int, max_parts: int = 10_000) -> int:
    """The size of the parts an upload of `length` bytes is cut into in storage that
    needs parts of at least `min_part` bytes (all but the last): the minimum, or more
    when the upload would need more than nine tenths of `max_parts` (some numbers go to
    requests that lose their lock), rounded up to a whole MiB."""
    mib = 1024 * 1024
    needed = -(-length // (max_parts * 9 // 10))
    return max(min_part, -(-needed // mib) * mib)
