"""Minting a viewer's authorisation for a scene (used by the scene JSON and the player
page) and the CloudFront signed cookies (`GET /api/v1/scenes/{sceneId}/cookies`). The guard that checks signed
requests is in origin/http/auth.py; the signatures are pure functions in
core/signing.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import hdrs, web

from core import signing
from origin import keys
from origin.http.auth import SigningState
from origin.http.errors import ApiError


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


def cookies_response(state: SigningState, scene_id: str, client_ip: str | None) -> web.Response:
    """The three CloudFront signed cookies for the scene prefix, as Set-Cookie fields
    and in the JSON body (`state` in cloudfront mode)."""
    try:
        cookies, expires = signing.scene_cookies(
            state.config, scene_id, now=state.clock(), client_ip=client_ip
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
