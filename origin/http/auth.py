"""Who may do what: the bearer token of the JSON API, and the signing guard that
checks every `/v/` and `/e/` request, and every request for a scene's references
under `/a/scenes/{sceneId}/reference/` (origin secret header, HMAC token), before a
handler runs. The signatures themselves are pure functions in core/signing.py;
minting for viewers is in origin/playback/cookies.py."""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from core import signing
from core.lru import LRU
from core.settings import Settings
from origin import keys
from origin.http.errors import ApiError, error_response

_SIGNED_PREFIXES = ("/v/", "/e/")
_SCENE_ASSETS = "/a/scenes/"


def is_signed_path(path: str) -> bool:
    """Whether the guard checks a request for `path`: a scene's media and exports, and
    its references (a possibly private scene's files). Avatars, topic icons and
    posters are public."""
    return path.startswith(_SIGNED_PREFIXES) or (
        path.startswith(_SCENE_ASSETS) and "/reference/" in path
    )


log = logging.getLogger("storyforge.signing")


def require_token(request: web.Request) -> None:
    """Bearer-token check (constant-time against every configured token)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    tokens = request.app[keys.SETTINGS].api_tokens
    ok = (
        scheme.lower() == "bearer"
        and token
        and any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens)
    )
    if not ok:
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="storyforge"'},
        )


@dataclass
class SigningStats:
    """Outcomes of the signing guard on `/v/` and `/e/` requests: `verified` passed
    every check that applies (origin secret header when set; the token in hmac mode),
    `denied` got a 403."""

    verified: int = 0
    denied: int = 0
    verified_segments: int = 0  # verified requests for media segments (.ts)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class SigningState:
    config: signing.SigningConfig
    origin_secret_header: str = ""
    origin_secret: bytes = b""
    cookie_domain: str = ""
    clock: Callable[[], float] = time.time
    stats: SigningStats = field(default_factory=SigningStats)
    # (raw query, scene prefix, client address) -> the token that verified for them:
    # a player sends one token with every request, its HMAC is computed once
    verified: LRU[signing.Token] = field(default_factory=lambda: LRU(8192))

    @property
    def guarded(self) -> bool:
        """Whether `/v/` and `/e/` requests go through `signing_guard`."""
        return self.config.enabled or bool(self.origin_secret)


# the query (no "?") that carries the viewer's authorisation into emitted URIs
AUTH_QUERY = web.RequestKey("sf_auth_query", str)


def signing_state(settings: Settings) -> SigningState:
    return SigningState(
        config=settings.signing_config(),
        origin_secret_header=settings.origin_secret_header,
        origin_secret=settings.origin_secret.encode(),
        cookie_domain=settings.cloudfront_cookie_domain,
    )


def _forbidden(state: SigningState, reason: str) -> web.Response:
    state.stats.denied += 1
    state.stats.reasons[reason] += 1
    log.debug("signed request denied: %s", reason)
    return error_response(403, "forbidden", reason)


def admit(
    state: SigningState,
    path: str,
    raw_query: str,
    remote: str | None,
    secret_value: str | None,
    routed_scene: str | None,
) -> str | signing.Denied:
    """The guard's verdict on one `/v/` or `/e/` request (pure but for the state's
    clock): the origin secret header when configured (the CDN adds it), then in hmac
    mode the viewer's token (core.signing.verify). Admitted, it is the query that
    carries the viewer's authorisation into the children of what is served: the
    token in hmac mode, the CloudFront policy query CloudFront forwarded, or ""."""
    if state.origin_secret:
        got = (secret_value or "").encode("utf-8", "replace")
        if not hmac.compare_digest(got, state.origin_secret):
            return signing.Denied("missing or wrong origin secret header")
    cfg = state.config
    if cfg.mode == "hmac":
        # verify's outcome depends on the query, the path's scene prefix, the client
        # address and the time; a remembered success still has its expiry checked
        # (the scope: "/v/{scene}/", "/e/{scene}/", or "/a/scenes/{scene}/")
        scope_end = path.find("/", len(_SCENE_ASSETS) if path.startswith("/a/") else 3) + 1
        memo_key = (raw_query, path[:scope_end], remote)
        token = state.verified.get(memo_key)
        now = state.clock()
        if token is None:
            result = signing.verify(
                raw_query, path, remote, now, cfg.hmac_keys, require_ip=cfg.hmac_bind_ip
            )
            if isinstance(result, signing.Denied):
                return result
            token = result.token
            state.verified.put(memo_key, token)
        elif not now < token.exp:
            return signing.Denied("token expired")
        if routed_scene is not None and routed_scene != token.scene_id:
            return signing.Denied("the token is for another scene")
        return token.query
    if cfg.mode == "cloudfront":
        return signing.forward_cloudfront_query(raw_query)
    return ""


def count_admitted(state: SigningState, path: str) -> None:
    state.stats.verified += 1
    if path.endswith(".ts"):
        state.stats.verified_segments += 1


@web.middleware
async def signing_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every `/v/` and `/e/` request, and every scene reference's, goes through
    `admit`; a refusal is 403 JSON with the reason. (The fast path admits the scene
    documents it answers with the same `admit`.)"""
    path = request.path
    if request.method == "OPTIONS" or not is_signed_path(path):
        return await handler(request)
    state = request.app[keys.SIGNING]
    verdict = admit(
        state,
        path,
        request.rel_url.raw_query_string,
        request.remote,
        request.headers.get(state.origin_secret_header),
        request.match_info.get("scene_id"),
    )
    if isinstance(verdict, signing.Denied):
        return _forbidden(state, verdict.reason)
    request[AUTH_QUERY] = verdict
    count_admitted(state, path)
    return await handler(request)
