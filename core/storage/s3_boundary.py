"""Where ``S3Storage`` meets S3: the GetObject parameters for a conditional GET (pure),
botocore and aiohttp errors translated into ours (S3's 304, 412 and 416 into ``Unsent``),
the streamed body, and S3's ETag and date forms as ``ObjectInfo`` carries them."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from core.conditional import byte_range, entity_tags, http_date, if_range_validator, is_entity_tag
from core.storage.base import (
    CHUNK_SIZE,
    BadGateway,
    NoSuchUpload,
    ObjectNotFound,
    StorageError,
    Unsent,
)


def quote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith(("W/", '"')):
        return etag
    return f'"{etag}"'


def utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def client_error_parts(exc: ClientError) -> tuple[str, str, int | None]:
    error = exc.response.get("Error", {}) or {}
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code", "") or ""), str(error.get("Message", "") or ""), status


@contextlib.contextmanager
def s3_errors(
    op: str, bucket: str, key: str | None = None, *, object_op: bool = True
) -> Iterator[None]:
    """Translate botocore/aiohttp failures inside the block into our exceptions.

    ``object_op``: a missing bucket or key means ObjectNotFound (get/head/tags/copy);
    otherwise (put/list/delete_prefix) a missing bucket is a plain StorageError.
    """
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    try:
        yield
    except ClientError as exc:
        code, message, status = client_error_parts(exc)
        detail = f"{code or status}{': ' + message if message else ''}"
        if code == "NoSuchUpload":
            raise NoSuchUpload(f"{where}: no such multipart upload ({detail})") from exc
        if object_op and (
            code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404") or status == 404
        ):
            raise ObjectNotFound(f"{where} not found ({detail})") from exc
        if status is not None and status >= 500 and status != 503:  # 503: S3's SlowDown
            raise BadGateway(f"S3 {op} {where} failed: {detail}") from exc
        raise StorageError(f"S3 {op} {where} failed: {detail}") from exc
    except ResponseParserError as exc:
        raise BadGateway(f"S3 {op} {where}: unreadable answer: {exc}") from exc
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise StorageError(f"S3 {op} {where} failed: {exc}") from exc


def refusal(exc: ClientError) -> Unsent | None:
    """S3's refusals of a conditional GetObject, which botocore raises as errors: 304 (no
    body, so Code "304"; ETag and Last-Modified in its fields), 412 PreconditionFailed,
    416 InvalidRange (with ActualObjectSize). None for every other error."""
    code, _, status = client_error_parts(exc)
    if status == 304 or code == "304":
        fields = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        etag = fields.get("etag")
        modified = http_date(fields.get("last-modified"))
        return Unsent(
            304,
            etag=quote_etag(etag) if etag else None,
            last_modified=utc(modified) if modified else None,
        )
    if status == 412 or code == "PreconditionFailed":
        return Unsent(412)
    if status == 416 or code == "InvalidRange":
        size = str(exc.response.get("Error", {}).get("ActualObjectSize", ""))
        return Unsent(416, size=int(size) if size.isdigit() else None)
    return None


def _single_tag(field: str) -> str | None:
    """The entity tag of a field that holds exactly one, else None (a list, `*`, junk)."""
    tags = entity_tags(field)
    return tags[0] if len(tags) == 1 and is_entity_tag(tags[0]) else None


def get_object_args(conditions: Mapping[str, str], *, ranged: bool = True) -> dict[str, Any]:
    """GetObject's precondition and Range parameters for a GET carrying ``conditions``:
    what S3 evaluates exactly as RFC 9110 does, so that S3's answer is already ours in
    the common case. The rest is left out and decided by ``decide`` on the object S3
    returns. ``ranged=False`` leaves the Range out (an If-Range that did not hold)."""
    args: dict[str, Any] = {}
    # §13.2.2 steps 1-2. One strong tag in If-Match is compared by S3 as strong comparison
    # does (§8.8.3.2); "*" holds for any object that exists (a missing one is 404 first,
    # §13.2.1). Anything else (a list, a weak tag) is left to decide(), and so are steps
    # 3-4, or S3 could answer 304 where step 1 gives 412. §13.1.4: If-Unmodified-Since
    # counts only without If-Match, and an invalid date is ignored.
    later_steps = True
    if_match = conditions.get("If-Match")
    if if_match is not None:
        tag = _single_tag(if_match)
        if tag is not None and not tag.startswith("W/"):
            args["IfMatch"] = tag
        else:
            later_steps = entity_tags(if_match) == ["*"]
    elif (unmodified := http_date(conditions.get("If-Unmodified-Since"))) is not None:
        args["IfUnmodifiedSince"] = unmodified
    # steps 3-4. If-None-Match uses weak comparison (§13.1.2) and S3's ETags are strong,
    # so W/"x" is sent as "x"; a list or "*" is left to decide(). §13.1.3: a recipient
    # MUST ignore If-Modified-Since when If-None-Match is present, so it is not sent then
    # (S3 documents no such rule; moto answers 304 to a stale If-None-Match with a
    # current If-Modified-Since).
    if_none_match = conditions.get("If-None-Match")
    if later_steps and if_none_match is not None:
        if (tag := _single_tag(if_none_match)) is not None:
            args["IfNoneMatch"] = tag.removeprefix("W/")
    elif later_steps and (modified := http_date(conditions.get("If-Modified-Since"))):
        args["IfModifiedSince"] = modified
    # step 5. Only a Range we honour (one byte range, §14.2) is sent, and only when the
    # If-Range can hold: a weak tag or an invalid date never does (§13.1.5). Whether a
    # strong tag or a date holds is checked on the object S3 returns.
    range_field = conditions.get("Range")
    spec = byte_range(range_field) if ranged and range_field is not None else None
    if_range = conditions.get("If-Range")
    if spec is not None and (if_range is None or if_range_validator(if_range) is not None):
        first, last = ("" if n is None else n for n in spec)
        args["Range"] = f"bytes={first}-{last}"
    return args


class S3Body:
    """Chunk source over a GetObject body; ``skip`` drops leading bytes when a server
    ignored our Range header and sent the whole object."""

    def __init__(self, body: Any, bucket: str, key: str, *, skip: int = 0) -> None:
        self._body = body
        self._bucket = bucket
        self._key = key
        self._skip = skip

    async def read(self, n: int) -> bytes:
        with s3_errors("read", self._bucket, self._key):
            while self._skip:
                dropped = await self._body.read(min(self._skip, CHUNK_SIZE))
                if not dropped:
                    return b""
                self._skip -= len(dropped)
            data: bytes = await self._body.read(n)
            return data

    async def close(self) -> None:
        self._body.close()


CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
