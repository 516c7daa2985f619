"""Signed URLs on the origin: the guard that checks every `/v/` and `/e/` request
(origin secret header, HMAC token), minting of a viewer's authorisation for a scene,
and the CloudFront signed-cookies endpoint. The signatures themselves are pure
functions in origin/signing.py."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import hdrs, web

from origin import catalog, keys, layout, signing
from origin.errors import ApiError, error_response, not_found
from origin.handlers.api import require_token
from origin.scenecache import LRU
from origin.settings import Settings

_SIGNED_PREFIXES = ("/v/", "/e/")
log = logging.getLogger("storyforge.signing")


# --- signing: state, guard, minting --------------------------------------------------


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


SIGNING = web.AppKey("signing", SigningState)
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
    mode the viewer's token (origin.signing.verify). Admitted, it is the query that
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
        memo_key = (raw_query, path[: path.find("/", 3) + 1], remote)
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
    """Every `/v/` and `/e/` request goes through `admit`; a refusal is 403 JSON with
    the reason. (Warm scene documents are admitted the same way on the connection,
    see playback.warm_answers.)"""
    path = request.path
    if request.method == "OPTIONS" or not path.startswith(_SIGNED_PREFIXES):
        return await handler(request)
    state = request.app[SIGNING]
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


def viewer_ip(request: web.Request) -> str | None:
    """The address a minted authorisation is bound to (when binding is on): the
    `viewerIp` query parameter of an authenticated app call acting for a viewer, else
    the requester's address."""
    given = request.query.get("viewerIp")
    if given is None:
        return request.remote
    try:
        return str(ipaddress.ip_address(given))
    except ValueError:
        raise ApiError(400, "bad_request", "viewerIp is not an IP address") from None


def mint_scene_grant(request: web.Request, scene_id: str, client_ip: str | None) -> signing.Grant:
    """The authorisation for a scene's `/v/` prefix, for the viewer at `client_ip`."""
    state = request.app[SIGNING]
    try:
        return signing.mint_scene(state.config, scene_id, now=state.clock(), client_ip=client_ip)
    except ValueError as exc:  # binding on, but the address is unknown
        raise ApiError(400, "bad_request", f"cannot sign for this client: {exc}") from None


def _http_date(epoch: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


def iso_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def scene_cookies(request: web.Request) -> web.Response:
    """GET /api/v1/scenes/{sceneId}/cookies (cloudfront mode): the three CloudFront
    signed cookies for the scene prefix, as Set-Cookie and in the JSON body."""
    require_token(request)
    state = request.app[SIGNING]
    if state.config.mode != "cloudfront":
        raise not_found("signed cookies are issued only when SIGNING=cloudfront")
    scene_id = request.match_info["scene_id"]
    if not layout.is_id(scene_id, "scn"):
        raise not_found("no such scene")
    async with request.app[keys.POOL].acquire() as conn:
        scene = await catalog.get_live_scene(conn, scene_id)
    if scene is None:
        raise not_found(f"no such scene: {scene_id}")
    try:
        cookies, expires = signing.scene_cookies(
            state.config, scene_id, now=state.clock(), client_ip=viewer_ip(request)
        )
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"cannot sign for this client: {exc}") from None
    path = f"/v/{scene_id}/"
    response = web.json_response(
        {
            "sceneId": scene_id,
            "cookies": cookies,
            "path": path,
            "domain": state.cookie_domain or None,
            "resource": signing.scene_resource(state.config.cdn_base, scene_id),
            "expiresAt": iso_time(expires),
        },
        headers={hdrs.CACHE_CONTROL: "private, no-store"},
    )
    for name, value in cookies.items():
        response.set_cookie(
            name,
            value,
            path=path,
            domain=state.cookie_domain or None,
            expires=_http_date(expires),
            secure=True,
            httponly=True,
            samesite="None",
        )
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/scenes/{scene_id}/cookies", scene_cookies)
