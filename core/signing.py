"""Signed URLs: CloudFront signed URLs, policies and cookies (verified by CloudFront),
HMAC tokens the origin verifies itself, and the cheap per-request propagation of a
viewer's authorisation into every URI the origin emits. Pure: no I/O, no clock (the
time is always passed in), no globals.

CloudFront (``SIGNING=cloudfront``)
    A custom policy over the scene prefix ``{CDN_BASE_URL}/v/{sceneId}/*`` with
    ``DateLessThan`` (and optionally ``IpAddress``), signed with RSA-SHA1 PKCS#1 v1.5
    (``cryptography``). Policies, signed URLs and their CloudFront base64 are
    botocore's ``CloudFrontSigner``; canned-policy URLs (``Expires``) sign single files
    such as exports. The signed cookies carry the same custom policy, with the values
    of the signed URL's parameters.

HMAC (``SIGNING=hmac``)
    ``?exp={unix seconds}&kid={key id}[&ip={address}]&sig={base64url}`` where
    ``sig = base64url(HMAC-SHA256(secret, f"{prefix}\\n{exp}\\n{ip or ''}"))`` without
    padding and ``prefix`` is ``/v/{sceneId}/`` (or ``/e/{sceneId}/`` for exports,
    ``/a/scenes/{sceneId}/reference/`` for the scene's references). One token covers
    everything under its prefix. ``verify`` is the origin's check: pure, with the clock
    injected, constant-time, and it answers ``Denied(reason)`` for any input at all
    (never raises).

Propagation
    Documents the origin caches (stitched playlists, per-segment playlists, the
    storyboard VTT) are built once as *templates*: every URI is followed by a mark
    (``mark_uri``), and ``render`` substitutes the viewer's query for the marks with two
    ``bytes.replace`` calls per request.

One module (~600 lines) because the three parts share one vocabulary (scene
prefixes, grants, queries) and one test file checks them against each other.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal
from urllib.parse import unquote

from botocore.signers import CloudFrontSigner
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from core import layout

__all__ = [
    "CloudFrontKey",
    "Denied",
    "Grant",
    "HmacKey",
    "MARK",
    "MARK_AMP",
    "MAX_QUERY",
    "MIN_SECRET_BYTES",
    "Mode",
    "NO_GRANT",
    "Ok",
    "SigningConfig",
    "Token",
    "apply_query",
    "canned_policy_url",
    "custom_policy_query",
    "custom_policy_url",
    "forward_cloudfront_query",
    "hmac_signature",
    "load_rsa_private_key",
    "mark_uri",
    "marking",
    "mint_export",
    "mint_references",
    "mint_scene",
    "mint_token",
    "parse_hmac_keys",
    "render",
    "scene_cookies",
    "scene_resource",
    "signed_cookies",
    "verify",
]

Mode = Literal["none", "cloudfront", "hmac"]

# ----------------------------------------------------------------------- CloudFront


def load_rsa_private_key(pem: bytes | str) -> rsa.RSAPrivateKey:
    """Parse an unencrypted PEM RSA private key (PKCS#1 or PKCS#8).

    Raises ValueError with a short reason when the text is not one."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the PEM key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM-encoded private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("CloudFront needs an RSA key")
    return key


@dataclass(frozen=True)
class CloudFrontKey:
    """A CloudFront public key's id and the matching RSA private key, and botocore's
    ``CloudFrontSigner`` over them (which writes every policy, URL and signature)."""

    key_pair_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    signer: CloudFrontSigner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _KEY_PAIR_ID_RE.fullmatch(self.key_pair_id):
            raise ValueError(f"key pair id {self.key_pair_id!r} is not 1-128 letters/digits")
        object.__setattr__(self, "signer", CloudFrontSigner(self.key_pair_id, self.sign))

    @classmethod
    def from_pem(cls, key_pair_id: str, pem: bytes | str) -> CloudFrontKey:
        return cls(key_pair_id, load_rsa_private_key(pem))

    def sign(self, message: bytes) -> bytes:
        """RSA PKCS#1 v1.5 over SHA-1, the signature CloudFront verifies (the
        ``rsa_signer`` botocore's signer calls)."""
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    def policy(self, resource: str, expires: int, *, ip_address: str | None = None) -> str:
        """A custom policy: ``resource`` (a URL, ``*`` wildcards allowed) until the
        unix second ``expires``, optionally for one address or CIDR range (an address
        without a prefix length gets ``/32``). botocore's ``build_policy``."""
        return str(self.signer.build_policy(resource, _utc(expires), ip_address=ip_address))


_KEY_PAIR_ID_RE = re.compile(r"[A-Za-z0-9]{1,128}")


def _utc(epoch: int) -> datetime:
    """The unix second ``epoch`` as the aware datetime botocore takes (it converts it
    back to the same integer)."""
    return datetime.fromtimestamp(int(epoch), UTC)


def canned_policy_url(url: str, expires: int, key: CloudFrontKey) -> str:
    """A canned-policy signed URL for exactly ``url`` (single files, e.g. exports):
    ``?Expires=N&Signature=...&Key-Pair-Id=...``."""
    return str(key.signer.generate_presigned_url(url, date_less_than=_utc(expires)))


def custom_policy_url(url: str, policy: str, key: CloudFrontKey) -> str:
    """``url`` signed with a custom policy: ``?Policy=...&Signature=...&Key-Pair-Id=...``."""
    return str(key.signer.generate_presigned_url(url, policy=policy))


def custom_policy_query(policy: str, key: CloudFrontKey) -> str:
    """``Policy=...&Signature=...&Key-Pair-Id=...`` for a custom policy: the query
    botocore appends to a URL (one without a query of its own gets ``?`` + it)."""
    _, _, query = custom_policy_url("", policy, key).partition("?")
    return query


def signed_cookies(policy: str, key: CloudFrontKey) -> dict[str, str]:
    """The three CloudFront signed cookies for a custom policy. Their values are the
    signed URL's ``Policy``, ``Signature`` and ``Key-Pair-Id`` parameters, in the same
    URL-safe base64 (CloudFront Developer Guide, "Setting signed cookies using a custom
    policy"), so they are taken from the query botocore's signer makes."""
    params = dict(part.split("=", 1) for part in custom_policy_query(policy, key).split("&"))
    return {f"CloudFront-{name}": params[name] for name in _CF_NAMES}


def scene_resource(cdn_base: str, scene_id: str) -> str:
    """The custom-policy resource covering a scene: ``{CDN_BASE_URL}/v/{sceneId}/*``."""
    _check_scene(scene_id)
    return f"{cdn_base.rstrip('/')}/v/{scene_id}/*"


# CloudFront query values the origin may copy into the URIs it emits: CloudFront's
# base64 alphabet only (so nothing can break out of a playlist line or attribute).
_CF_VALUE_RE = re.compile(r"[A-Za-z0-9~_-]{1,8192}")
_CF_NAMES = ("Policy", "Signature", "Key-Pair-Id")


def forward_cloudfront_query(raw_query: str) -> str:
    """The custom-policy part of an incoming (CDN-forwarded) query, in canonical order,
    for the children of the document being served; ``""`` when the request carries no
    complete, well-formed custom-policy signature (e.g. a viewer using signed cookies).

    A canned policy signs one exact URL and can never cover children, so it is never
    forwarded. CloudFront verified the signature before forwarding; the origin only
    makes sure the values are inert text."""
    if not raw_query or len(raw_query) > 16384 or "Policy=" not in raw_query:
        return ""
    found: dict[str, str] = {}
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if name in _CF_NAMES:
            if name in found or not _CF_VALUE_RE.fullmatch(value):
                return ""
            found[name] = value
    if len(found) != 3:
        return ""
    return "&".join(f"{n}={found[n]}" for n in _CF_NAMES)


# ----------------------------------------------------------------------------- HMAC


@dataclass(frozen=True)
class HmacKey:
    """One origin token key: an id carried in tokens and its secret."""

    kid: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KID_RE.fullmatch(self.kid):
            raise ValueError(f"key id {self.kid!r} must be 1-32 of A-Z a-z 0-9 _ -")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret of key {self.kid!r} is shorter than {MIN_SECRET_BYTES} bytes")


MIN_SECRET_BYTES: Final = 16
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_hmac_keys(value: str) -> tuple[HmacKey, ...]:
    """``kid:secret,kid:secret`` -> keys, in order (the first one signs, all verify).
    Raises ValueError naming the offending entry (never echoing a secret)."""
    keys: list[HmacKey] = []
    seen: set[str] = set()
    for n, entry in enumerate((p.strip() for p in value.split(",")), start=1):
        if not entry:
            continue
        kid, sep, secret = entry.partition(":")
        kid, secret = kid.strip(), secret.strip()
        if not sep or not kid or not secret:
            raise ValueError(f"entry {n} is not kid:secret")
        if kid in seen:
            raise ValueError(f"key id {kid!r} appears twice")
        seen.add(kid)
        keys.append(HmacKey(kid, secret.encode()))
    return tuple(keys)


def hmac_signature(secret: bytes, prefix: str, exp: int, ip: str | None = None) -> str:
    """``base64url(HMAC-SHA256(secret, f"{prefix}\\n{exp}\\n{ip or ''}"))``, unpadded."""
    message = f"{prefix}\n{exp}\n{ip or ''}".encode()
    digest = hmac.digest(secret, message, "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Token:
    """A verified (or freshly minted) origin token."""

    prefix: str  # "/v/{sceneId}/", "/e/{sceneId}/" or "/a/scenes/{sceneId}/reference/"
    exp: int
    kid: str
    ip: str | None
    sig: str

    @property
    def query(self) -> str:
        """The token as a query string (no leading ``?``), fields in canonical order."""
        ip = f"&ip={self.ip}" if self.ip else ""
        return f"exp={self.exp}&kid={self.kid}{ip}&sig={self.sig}"

    @property
    def scene_id(self) -> str:
        if self.prefix.startswith("/a/"):
            return self.prefix[len("/a/scenes/") : -len("/reference/")]
        return self.prefix[3:-1]


def mint_token(prefix: str, exp: int, key: HmacKey, ip: str | None = None) -> Token:
    """A token for everything under ``prefix`` (``/v/{sceneId}/``, ``/e/{sceneId}/`` or
    ``/a/scenes/{sceneId}/reference/``) valid while ``now < exp``, optionally bound to
    one client address."""
    _prefix_scene(prefix)
    if ip is not None:
        ip = _normal_ip(ip)
        if ip is None:
            raise ValueError("not an IP address")
    return Token(prefix, int(exp), key.kid, ip, hmac_signature(key.secret, prefix, exp, ip))


@dataclass(frozen=True, slots=True)
class Ok:
    token: Token


@dataclass(frozen=True, slots=True)
class Denied:
    reason: str


_TOKEN_NAMES = frozenset(("exp", "kid", "ip", "sig"))
_EXP_RE = re.compile(r"[0-9]{1,12}")
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url, no padding
_IP_TEXT_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")
# the prefixes a token covers: a scene's media, its exports, its references
_PATH_RE = re.compile(r"/[ve]/([^/]{1,64})/|/a/scenes/([^/]{1,64})/reference/")
# Token.query's own form: exp, kid, optional ip, sig, in that order, nothing else
_CANONICAL_RE = re.compile(
    r"exp=([0-9]{1,12})&kid=([A-Za-z0-9_-]{1,32})(?:&ip=([0-9A-Fa-f.:]{2,45}))?"
    r"&sig=([A-Za-z0-9_-]{43})"
)
MAX_QUERY: Final = 4096


def verify(
    query: str,
    path: str,
    client_ip: str | None,
    now: float,
    keys: Sequence[HmacKey],
    *,
    require_ip: bool = False,
) -> Ok | Denied:
    """Check the origin token in ``query`` (the raw query string) for ``path`` at time
    ``now`` (unix seconds) against ``keys``. Never raises: any input gives Ok or Denied.

    Order: the path names a valid scene (before anything else looks at it); the token
    fields are present once each and well-formed; the key id is active; the signature
    over the path's scene prefix matches (constant time); a bound address equals
    ``client_ip``; ``now < exp``. ``require_ip`` refuses tokens not bound to an
    address."""
    try:
        return _verify(query, path, client_ip, now, keys, require_ip)
    except Exception:  # defensive: garbage must never become a 500
        return Denied("malformed token")


def _verify(
    query: str,
    path: str,
    client_ip: str | None,
    now: float,
    keys: Sequence[HmacKey],
    require_ip: bool,
) -> Ok | Denied:
    match = _PATH_RE.match(path)
    if match is None or not layout.is_id(match.group(1) or match.group(2), "scn"):
        return Denied("the path does not name a scene")
    prefix = match.group(0)
    canonical = _CANONICAL_RE.fullmatch(query)
    if canonical is not None:  # what mint_token writes: no parsing loop needed
        exp_text, kid, ip_text, sig = canonical.groups()
    else:
        parsed = _token_fields(query)
        if isinstance(parsed, Denied):
            return parsed
        exp_text, kid, ip_text, sig = parsed
    ip: str | None = None
    if ip_text is not None:
        ip = _normal_ip(ip_text) if _IP_TEXT_RE.fullmatch(ip_text) else None
        if ip is None or ip != ip_text:
            return Denied("malformed token: ip")
    elif require_ip:
        return Denied("token is not bound to a client address")
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        return Denied("unknown or retired key id")
    exp = int(exp_text)
    expected = hmac_signature(key.secret, prefix, exp, ip)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
        return Denied("bad signature (forged, altered, or for another scene)")
    if ip is not None and (client_ip is None or _normal_ip(client_ip) != ip):
        return Denied("token is bound to another client address")
    if not now < exp:
        return Denied("token expired")
    return Ok(Token(prefix, exp, kid, ip, sig))


def _token_fields(query: str) -> tuple[str, str, str | None, str] | Denied:
    """exp, kid, ip (or None) and sig from a query in any order, percent-encoded or
    not, among other parameters; or why not."""
    if not query:
        return Denied("missing token: sign the URL (exp, kid, sig)")
    if len(query) > MAX_QUERY:
        return Denied("malformed token: query too long")
    fields: dict[str, str] = {}
    for part in query.split("&"):
        raw_name, _, value = part.partition("=")
        name = unquote(raw_name, errors="replace") if "%" in raw_name else raw_name
        if name not in _TOKEN_NAMES:
            continue  # other parameters are not ours to judge
        if name in fields:
            return Denied(f"malformed token: repeated {name}")
        fields[name] = unquote(value, errors="replace") if "%" in value else value
    if not fields:
        return Denied("missing token: sign the URL (exp, kid, sig)")
    for name in ("exp", "kid", "sig"):
        if name not in fields:
            return Denied(f"malformed token: no {name}")
    exp_text, kid, sig = fields["exp"], fields["kid"], fields["sig"]
    if not _EXP_RE.fullmatch(exp_text):
        return Denied("malformed token: exp")
    if not _KID_RE.fullmatch(kid):
        return Denied("malformed token: kid")
    if not _SIG_RE.fullmatch(sig):
        return Denied("malformed token: sig")
    return exp_text, kid, fields.get("ip"), sig


def _normal_ip(text: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if addr.scope_id:
            return None
    return str(addr)


def _check_scene(scene_id: str) -> None:
    if not layout.is_id(scene_id, "scn"):
        raise ValueError(f"not a scene id: {scene_id!r}")


def _prefix_scene(prefix: str) -> str:
    match = _PATH_RE.fullmatch(prefix)
    if match is None or not layout.is_id(match.group(1) or match.group(2), "scn"):
        raise ValueError(f"not a scene prefix: {prefix!r}")
    return str(match.group(1) or match.group(2))


# ---------------------------------------------------------------- the process' policy


@dataclass(frozen=True)
class SigningConfig:
    """Everything the origin needs to mint and check authorisations."""

    mode: Mode = "none"
    ttl: int = 21600
    cdn_base: str = ""
    hmac_keys: tuple[HmacKey, ...] = ()
    hmac_bind_ip: bool = False
    cloudfront: CloudFrontKey | None = None
    cloudfront_bind_ip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("none", "cloudfront", "hmac"):
            raise ValueError(f"unknown signing mode {self.mode!r}")
        if self.ttl < 1:
            raise ValueError("ttl must be >= 1 s")
        if self.mode == "hmac" and not self.hmac_keys:
            raise ValueError("hmac signing needs at least one key")
        if self.mode == "cloudfront" and (self.cloudfront is None or not self.cdn_base):
            raise ValueError("cloudfront signing needs a key and a CDN base URL")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True, slots=True)
class Grant:
    """A minted authorisation: the query to append to every URL it covers."""

    query: str  # without the leading "?"; "" when signing is off
    expires: int | None  # unix seconds; None when signing is off

    def apply(self, url: str) -> str:
        return apply_query(url, self.query)


NO_GRANT: Final = Grant("", None)


def apply_query(url: str, query: str) -> str:
    """``url`` with ``query`` appended (before any ``#fragment``)."""
    if not query:
        return url
    base, hash_, fragment = url.partition("#")
    return base + ("&" if "?" in base else "?") + query + hash_ + fragment


def _bound_ip(bind: bool, client_ip: str | None) -> str | None:
    if not bind:
        return None
    ip = _normal_ip(client_ip) if client_ip else None
    if ip is None:
        raise ValueError("IP binding is on but the client address is unknown")
    return ip


def _mint_prefix(cfg: SigningConfig, prefix: str, *, now: float, client_ip: str | None) -> Grant:
    exp = int(now) + cfg.ttl
    if cfg.mode == "hmac":
        ip = _bound_ip(cfg.hmac_bind_ip, client_ip)
        return Grant(mint_token(prefix, exp, cfg.hmac_keys[0], ip).query, exp)
    if cfg.mode == "cloudfront":
        assert cfg.cloudfront is not None
        ip = _bound_ip(cfg.cloudfront_bind_ip, client_ip)
        policy = cfg.cloudfront.policy(f"{cfg.cdn_base.rstrip('/')}{prefix}*", exp, ip_address=ip)
        return Grant(custom_policy_query(policy, cfg.cloudfront), exp)
    return NO_GRANT


def mint_scene(cfg: SigningConfig, scene_id: str, *, now: float, client_ip: str | None) -> Grant:
    """The authorisation for everything under ``/v/{sceneId}/`` for ``cfg.ttl`` seconds:
    an origin token (hmac) or a custom policy over ``{CDN_BASE_URL}/v/{sceneId}/*``
    (cloudfront); NO_GRANT when signing is off."""
    _check_scene(scene_id)
    return _mint_prefix(cfg, f"/v/{scene_id}/", now=now, client_ip=client_ip)


def mint_references(
    cfg: SigningConfig, scene_id: str, *, now: float, client_ip: str | None
) -> Grant:
    """The authorisation for a scene's references, ``/a/scenes/{sceneId}/reference/``,
    as ``mint_scene`` gives one for its media (a private scene's references are as
    private as its clips)."""
    _check_scene(scene_id)
    prefix = layout.asset_path(layout.reference_prefix(scene_id))
    return _mint_prefix(cfg, prefix, now=now, client_ip=client_ip)


def scene_cookies(
    cfg: SigningConfig, scene_id: str, *, now: float, client_ip: str | None
) -> tuple[dict[str, str], int]:
    """CloudFront signed cookies for the scene prefix, and their expiry."""
    if cfg.mode != "cloudfront" or cfg.cloudfront is None:
        raise ValueError("signed cookies exist only in cloudfront mode")
    exp = int(now) + cfg.ttl
    ip = _bound_ip(cfg.cloudfront_bind_ip, client_ip)
    policy = cfg.cloudfront.policy(scene_resource(cfg.cdn_base, scene_id), exp, ip_address=ip)
    return signed_cookies(policy, cfg.cloudfront), exp


def mint_export(
    cfg: SigningConfig, scene_id: str, url: str, *, now: float, client_ip: str | None
) -> str:
    """A signed URL for one export file ``url`` (under ``/e/{sceneId}/``): a canned
    policy for exactly that URL (cloudfront) or an origin token for the scene's
    ``/e/`` prefix (hmac); ``url`` unchanged when signing is off."""
    _check_scene(scene_id)
    exp = int(now) + cfg.ttl
    if cfg.mode == "hmac":
        ip = _bound_ip(cfg.hmac_bind_ip, client_ip)
        return apply_query(url, mint_token(f"/e/{scene_id}/", exp, cfg.hmac_keys[0], ip).query)
    if cfg.mode == "cloudfront":
        assert cfg.cloudfront is not None
        if cfg.cloudfront_bind_ip:
            ip = _bound_ip(True, client_ip)
            policy = cfg.cloudfront.policy(url, exp, ip_address=ip)
            return custom_policy_url(url, policy, cfg.cloudfront)
        return canned_policy_url(url, exp, cfg.cloudfront)
    return url


# ------------------------------------------------------------------------ templates

MARK: Final = "\x00"  # stands for "?{query}" after a URI without a query
MARK_AMP: Final = "\x01"  # stands for "&{query}" after a URI that has one


def mark_uri(uri: str) -> str:
    """``uri`` followed by the mark ``render`` replaces with the viewer's query. A
    fragment (``#xywh=...``) stays after the query."""
    base, hash_, fragment = uri.partition("#")
    return base + (MARK_AMP if "?" in base else MARK) + hash_ + fragment


def render(template: bytes, query: str) -> bytes:
    """The document for one viewer: each mark replaced by ``?query`` / ``&query``
    (both removed when ``query`` is empty). Two C-level scans of the template."""
    if query:
        q = query.encode("ascii")
        out = template.replace(b"\x00", b"?" + q)
        return out.replace(b"\x01", b"&" + q) if b"\x01" in out else out
    return template.replace(b"\x00", b"").replace(b"\x01", b"")


def marking(uri_for: Callable[[str], str]) -> Callable[[str], str]:
    """``uri_for`` whose URIs are followed by a mark (for the document builders)."""
    return lambda rel: mark_uri(uri_for(rel))
