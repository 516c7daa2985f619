"""Minting a viewer's authorisation for a scene (used by the scene JSON and the player
page) and the CloudFront signed-cookies endpoint. The guard that checks signed
requests is in origin/http/auth.py; the signatures are pure functions in
core/signing.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import hdrs, web

from core import catalog, layout, signing
from origin import keys
from origin.http.auth import require_token
from origin.http.errors import ApiError, not_found


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


def mint_scene_grant(
    request: web.Request,
    scene_id: str,
    client_ip: str | None,
    mint: Callable[..., signing.Grant] = signing.mint_scene,
) -> signing.Grant:
    """The authorisation for a scene's `/v/` prefix (or what `mint` covers, e.g.
    `signing.mint_references`), for the viewer at `client_ip`."""
    state = request.app[keys.SIGNING]
    try:
        return mint(state.config, scene_id, now=state.clock(), client_ip=client_ip)
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
    state = request.app[keys.SIGNING]
    if state.config.mode != "cloudfront":
        raise not_found("signed cookies are issued only when keys.SIGNING=cloudfront")
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
