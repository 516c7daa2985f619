"""Captions (issue 27): WebVTT and SRT parsed, checked and normalised to WebVTT, the
BCP 47 language tags they are stored under, a clip's cues cut into the WebVTT
segments of a subtitles rendition or placed on another timeline (an export's
sidecar: `place`, `joined`). Pure: bytes and numbers in, text out.

Times are integer milliseconds. A cue must end after it starts and start no earlier
than the cue before it (422 with the line number otherwise); a cue that runs past the
clip's end is clamped to it and a cue starting at or after the end is dropped
(`clamp`), at upload when the clip's duration is known and whenever a playlist is
built (a refined clip's duration may differ by a frame). Cue text keeps WebVTT's cue
markup only (`b i u c v lang ruby rt` and timestamps); any other tag is refused with
the line it is on, so nothing a browser would render as HTML is ever stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: accepted Content-Types (parameters such as charset stripped)
VTT_TYPES = ("text/vtt",)
SRT_TYPES = ("application/x-subrip", "text/srt", "application/srt")
MAX_CUE_CHARS = 2000  # text of one cue; longer is not a caption
MAX_LINE_CHARS = 4000  # any line; a longer one is not a caption file either

#: an empty WebVTT segment: valid and at least 10 bytes (iOS 11 refused shorter)
EMPTY_VTT = "WEBVTT\n\n"


class CaptionError(ValueError):
    """Refused captions: `status` 415 (not captions at all: HTML, a playlist, a
    binary, the wrong format) or 422 (captions that break a rule), with the 1-based
    line of the input it concerns when there is one."""

    def __init__(self, status: int, reason: str, line: int | None = None) -> None:
        self.status = status
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str  # WebVTT cue text (checked markup, `&` escaped), lines joined by "\n"
    identifier: str = ""
    settings: str = ""  # WebVTT cue settings, checked, space separated


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_cues: int


# -- language tags ---------------------------------------------------------------

_LANGTAG = re.compile(
    r"""^(?:
        (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})
        (?:-(?P<script>[a-z]{4}))?
        (?:-(?P<region>[a-z]{2}|[0-9]{3}))?
        (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*
        (?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*
        (?:-x(?:-[a-z0-9]{1,8})+)?
    )$""",
    re.VERBOSE,
)
MAX_LANGUAGE_CHARS = 35


def language_tag(text: str) -> str | None:
    """`text` as a well-formed BCP 47 language tag (RFC 5646 langtag, without
    grandfathered or private-use-only tags) in its canonical case (`pt-br` ->
    `pt-BR`, `zh-hant` -> `zh-Hant`), else None."""
    low = text.lower()
    if not text.isascii() or len(text) > MAX_LANGUAGE_CHARS:
        return None
    match = _LANGTAG.match(low)
    if match is None:
        return None
    parts = low.split("-")
    out = [parts[0]]
    for part in parts[1:]:
        if out[-1] == "x" or len(out[-1]) == 1:
            out.append(part)  # extensions and private use keep lower case
        elif len(part) == 4 and part.isalpha() and part == match["script"]:
            out.append(part.title())
        elif len(part) == 2 and part == match["region"]:
            out.append(part.upper())
        else:
            out.append(part)
    return "-".join(out)


def language_name(tag: str) -> str:
    """The NAME of a subtitles rendition: the tag itself (a name table would be a
    second copy of CLDR; players show LANGUAGE in the viewer's language)."""
    return tag


# -- times -------------------------------------------------------------------------

_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_SRT_TIME = r"(\d{1,}):([0-5]\d):([0-5]\d)[,.](\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t]+(.*))?$")
_SRT_TIMING = re.compile(rf"^[ \t]*{_SRT_TIME}[ \t]*-->[ \t]*{_SRT_TIME}(?:[ \t]+.*)?$")
_TIMESTAMP_TAG = re.compile(rf"^{_VTT_TIME}$")


def _ms(hours: str | None, minutes: str, seconds: str, millis: str) -> int:
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def vtt_time(ms: int) -> str:
    """`HH:MM:SS.mmm` (hours two digits at least)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


# -- cue settings and text -------------------------------------------------------------

_SETTING = re.compile(
    r"^(?:vertical:(?:rl|lr)"
    r"|line:(?:-?\d+|\d+(?:\.\d+)?%)(?:,(?:start|center|end))?"
    r"|position:\d+(?:\.\d+)?%(?:,(?:line-left|center|line-right))?"
    r"|size:\d+(?:\.\d+)?%"
    r"|align:(?:start|center|end|left|right))$"
)
#: WebVTT cue tags (W3C WebVTT 4.2.2) and what may follow the name
_TAG = re.compile(r"<(/?)([^\s>./]*)((?:\.[^\s>./]+)*)((?:[ \t][^>]*)?)>")
_CUE_TAGS = frozenset("b i u c v lang ruby rt".split())
_ANNOTATED = frozenset(("v", "lang"))  # a start tag that carries an annotation
_ENTITY = re.compile(r"&(?:amp|lt|gt|lrm|rlm|nbsp|#\d{1,7}|#x[0-9a-fA-F]{1,6});")
_SRT_FONT = re.compile(r"</?font(?:[ \t][^>]*)?>", re.IGNORECASE)


def _settings(text: str, line: int) -> str:
    kept = []
    for item in text.split():
        if item.startswith("region:"):
            continue  # regions are not kept (REGION blocks are dropped)
        if not _SETTING.match(item):
            raise CaptionError(422, f"unknown cue setting {item[:40]!r}", line)
        kept.append(item)
    return " ".join(kept)


def _escape_ampersands(text: str) -> str:
    out = []
    position = 0
    for index in (i for i, char in enumerate(text) if char == "&"):
        out.append(text[position:index])
        out.append("&" if _ENTITY.match(text, index) else "&amp;")
        position = index + 1
    out.append(text[position:])
    return "".join(out)


def _cue_text(text: str, line: int) -> str:
    """The text of a cue line with its markup checked: every `<` opens a WebVTT cue
    tag or a timestamp, every `&` starts an entity or is escaped."""
    position = 0
    while (start := text.find("<", position)) != -1:
        tag = _TAG.match(text, start)
        if tag is None:
            raise CaptionError(422, "'<' that opens no tag (write &lt;)", line)
        closing, name, classes, annotation = tag.groups()
        if not closing and _TIMESTAMP_TAG.match(name + classes + annotation):
            pass
        elif name.lower() not in _CUE_TAGS or name != name.lower():
            raise CaptionError(422, f"tag <{closing}{name[:20]}> is not WebVTT cue markup", line)
        elif closing and (classes or annotation):
            raise CaptionError(422, f"end tag </{name}> with more than its name", line)
        elif annotation and name not in _ANNOTATED:
            raise CaptionError(422, f"tag <{name}> takes no annotation", line)
        elif any(c in annotation for c in "<&\"'=") and name == "lang":
            raise CaptionError(422, "a <lang> annotation is a language tag", line)
        elif "<" in annotation:
            raise CaptionError(422, "'<' inside a tag", line)
        position = tag.end()
    return _escape_ampersands(text)


# -- the two formats ----------------------------------------------------------------


def _text(data: bytes, limits: Limits) -> list[str]:
    if len(data) > limits.max_bytes:
        raise CaptionError(413, f"captions over {limits.max_bytes} bytes")
    if b"\x00" in data:
        raise CaptionError(415, "binary data, not captions")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaptionError(415, f"not UTF-8 text (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    if any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        raise CaptionError(415, "control characters: binary data, not captions")
    head = text.lstrip()[:64].lower()
    if head.startswith("#extm3u"):
        raise CaptionError(415, "an HLS playlist, not captions")
    if head.startswith(("<!doctype", "<html", "<?xml", "<tt", "<script", "<svg")):
        raise CaptionError(415, "HTML or XML, not WebVTT or SRT")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_CHARS:
            raise CaptionError(422, f"a line over {MAX_LINE_CHARS} characters", number)
    return lines


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Runs of non-blank lines with the 1-based number of their first line."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            if not current:
                blocks.append((number, current))
            current.append(line)
        else:
            current = []
    return blocks


def parse_vtt(data: bytes, limits: Limits) -> list[Cue]:
    """The cues of a WebVTT file (W3C WebVTT: header, NOTE, STYLE and REGION blocks
    read and dropped, hours optional or of any width, cue settings checked)."""
    lines = _text(data, limits)
    signature = lines[0]
    if not (signature == "WEBVTT" or signature.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise CaptionError(415, "a WebVTT file starts with the line WEBVTT", 1)
    blocks = _blocks(lines)
    for offset, line in enumerate(blocks[0][1]):
        if "-->" in line:
            raise CaptionError(422, "a blank line must end the header", 1 + offset)
    cues = _Cues(limits)
    for first, block in blocks[1:]:
        head = block[0]
        if head.startswith("NOTE") and (head == "NOTE" or head[4] in " \t"):
            continue
        if head.rstrip() in ("STYLE", "REGION"):
            if cues.cues:
                raise CaptionError(422, f"{head.rstrip()} block after the first cue", first)
            continue
        timing_at = 0 if "-->" in head else 1
        if timing_at == 1 and (len(block) < 2 or "-->" not in block[1]):
            raise CaptionError(422, "a block that is neither a cue nor a NOTE", first)
        match = _VTT_TIMING.match(block[timing_at])
        if match is None:
            raise CaptionError(422, "bad cue timing line", first + timing_at)
        groups = match.groups()
        settings = _settings(groups[8] or "", first + timing_at)
        identifier = block[0] if timing_at else ""
        cues.add(
            first, block, timing_at, _ms(*groups[0:4]), _ms(*groups[4:8]), settings, identifier
        )
    return cues.cues


def parse_srt(data: bytes, limits: Limits) -> list[Cue]:
    """The cues of a SubRip file: index, `HH:MM:SS,mmm --> HH:MM:SS,mmm` (a dot
    accepted too, hours of any width), text; `<font>` tags dropped (SubRip's only
    markup WebVTT lacks), the rest checked as WebVTT cue text."""
    lines = _text(data, limits)
    if lines[0].startswith("WEBVTT"):
        raise CaptionError(415, "a WebVTT file sent as SubRip (Content-Type text/vtt)", 1)
    cues = _Cues(limits)
    for first, block in _blocks(lines):
        timing_at = 0 if "-->" in block[0] else 1
        if timing_at == 1 and not block[0].strip().isdigit():
            raise CaptionError(422, "a SubRip cue starts with its number", first)
        if len(block) <= timing_at:
            raise CaptionError(422, "a cue number without a timing line", first)
        match = _SRT_TIMING.match(block[timing_at])
        if match is None:
            raise CaptionError(422, "bad cue timing line", first + timing_at)
        groups = match.groups()
        text = [_SRT_FONT.sub("", line) for line in block[timing_at + 1 :]]
        cues.add(
            first,
            [*block[: timing_at + 1], *text],
            timing_at,
            _ms(*groups[0:4]),
            _ms(*groups[4:8]),
            "",
            "",
        )
    if not cues.cues:
        raise CaptionError(422, "no SubRip cue (DELETE the language to remove its captions)")
    return cues.cues


class _Cues:
    """Cues as they are read: each checked (times, text, markup) and against the
    one before it (order) and the cap."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cues: list[Cue] = []

    def add(
        self,
        first: int,
        block: list[str],
        timing_at: int,
        start_ms: int,
        end_ms: int,
        settings: str,
        identifier: str,
    ) -> None:
        line = first + timing_at
        if end_ms <= start_ms:
            raise CaptionError(422, "cue ends before it starts", line)
        if self.cues and start_ms < self.cues[-1].start_ms:
            raise CaptionError(422, "cue starts before the cue above it", line)
        if len(self.cues) >= self.limits.max_cues:
            raise CaptionError(422, f"more than {self.limits.max_cues} cues", line)
        payload = []
        for number, text in enumerate(block[timing_at + 1 :], line + 1):
            if "-->" in text:
                raise CaptionError(422, "'-->' in cue text (no blank line before a cue?)", number)
            payload.append(_cue_text(text, number))
        joined = "\n".join(payload)
        if len(joined) > MAX_CUE_CHARS:
            raise CaptionError(422, f"cue text over {MAX_CUE_CHARS} characters", line)
        self.cues.append(Cue(start_ms, end_ms, joined, identifier, settings))


def parse(data: bytes, content_type: str, limits: Limits) -> list[Cue]:
    """Cues from a body by its Content-Type (415 for any other type)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in VTT_TYPES:
        return parse_vtt(data, limits)
    if kind in SRT_TYPES:
        return parse_srt(data, limits)
    raise CaptionError(415, "captions are text/vtt or application/x-subrip")


#: captions as stored were checked on the way in: no caps to apply when reading them
STORED_LIMITS = Limits(max_bytes=1 << 40, max_cues=1 << 40)


def stored_cues(vtt: str) -> list[Cue]:
    """The cues of captions as stored (normalised WebVTT, core/subtitles.py)."""
    return parse_vtt(vtt.encode(), STORED_LIMITS)


def clamp(cues: list[Cue], duration_ms: int) -> list[Cue]:
    """The cues inside a clip of `duration_ms`: ends past it clamped, cues starting
    at or after it dropped."""
    return place(cues, 0, duration_ms, 0)


def place(cues: Sequence[Cue], start_ms: int, end_ms: int, at_ms: int) -> list[Cue]:
    """The cues shown during [start_ms, end_ms) of their clip's time, cut to it (a cue
    partly inside clamped, one outside dropped) and moved so that `start_ms` is at
    `at_ms`: a clip's part on another timeline (an export's, core/exportplan.py)."""
    shift = at_ms - start_ms
    return [
        cue
        if shift == 0 and start_ms <= cue.start_ms and cue.end_ms <= end_ms
        else Cue(
            max(cue.start_ms, start_ms) + shift,
            min(cue.end_ms, end_ms) + shift,
            cue.text,
            cue.identifier,
            cue.settings,
        )
        for cue in cues
        if cue.start_ms < end_ms and cue.end_ms > start_ms
    ]


def joined(parts: Sequence[Sequence[Cue]]) -> str:
    """One WebVTT file of the cues of several clips, already placed in order on one
    timeline: a cue identifier that an earlier cue has is dropped (identifiers are
    unique in a file, W3C WebVTT 4.1; each clip numbers its own)."""
    seen: set[str] = set()
    out = []
    for cue in (cue for part in parts for cue in part):
        if cue.identifier in seen:
            cue = Cue(cue.start_ms, cue.end_ms, cue.text, "", cue.settings)
        seen.add(cue.identifier)
        out.append(cue)
    return to_vtt(out)


def to_vtt(cues: list[Cue], header: str = "") -> str:
    """A WebVTT file of `cues`; `header` (an `X-TIMESTAMP-MAP=` line) goes under the
    signature."""
    out = ["WEBVTT\n"]
    if header:
        out.append(header + "\n")
    out.append("\n")
    for cue in cues:
        if cue.identifier:
            out.append(cue.identifier + "\n")
        timing = f"{vtt_time(cue.start_ms)} --> {vtt_time(cue.end_ms)}"
        out.append(f"{timing} {cue.settings}\n" if cue.settings else timing + "\n")
        out.append(cue.text + "\n\n" if cue.text else "\n")
    return "".join(out)


def timestamp_map(first_pts: int) -> str:
    """The WebVTT header line that puts cue time 0 at `first_pts` (90 kHz) of the
    clip's MPEG-TS clock (RFC 8216 §3.5): its first frame, the source's time 0."""
    return f"X-TIMESTAMP-MAP=MPEGTS:{first_pts},LOCAL:00:00:00.000"


def segment_vtt(cues: list[Cue], start_ms: int, end_ms: int, first_pts: int) -> str:
    """One WebVTT segment of a subtitles rendition: the cues (clip times, already
    clamped to the clip) shown at some moment of [start_ms, end_ms), each whole, so a
    cue spanning segments is in each of them (players drop the repeats), mapped onto
    the clip's MPEG-TS clock."""
    shown = [cue for cue in cues if cue.start_ms < end_ms and cue.end_ms > start_ms]
    return to_vtt(shown, timestamp_map(first_pts))
