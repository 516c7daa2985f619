"""Webhook deliveries, pure: which endpoint addresses may be called (the address
policy), how a delivery is signed (Standard Webhooks, with the `standardwebhooks`
package), and how an endpoint's answer is judged. workers/jobs/webhook.py does the I/O.

The policy is checked at delivery time against the addresses the endpoint's name
resolves to then, and the connection goes only to those addresses, so a name that
later resolves elsewhere cannot reach anything the check did not see."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

# Cloud instance metadata services: refused whatever WEBHOOK_ALLOW_PRIVATE says
# (AWS IMDS over IPv4 and IPv6, ECS task metadata, Alibaba Cloud).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why a delivery may not connect to `address` (an IP literal), or None.

    Metadata addresses and anything that is not a unicast address (unspecified,
    multicast, reserved) are always refused; loopback, private, link-local and other
    non-global addresses (RFC 6890 special-purpose ranges) unless `allow_private`."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip.is_reserved):
        return f"{ip} is not a unicast address"
    for kind, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
    ):
        if hit:
            return None if allow_private else f"{ip} is a {kind} address{_STRICT}"
    if ip.is_reserved:
        return f"{ip} is not a unicast address"
    if not ip.is_global:
        return None if allow_private else f"{ip} is a non-global address{_STRICT}"
    return None


_STRICT = " (WEBHOOK_ALLOW_PRIVATE=false)"


def endpoint_refusal(url: str, addresses: Sequence[str], *, allow_private: bool) -> str | None:
    """Why `url`, whose host resolved to `addresses`, may not be called, or None.
    One refused address refuses the endpoint."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    if not addresses:
        return f"{parts.hostname} resolved to no address"
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            return f"refused {parts.hostname}: {reason}"
    return None


def signed_headers(secret: str, event_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks fields of one delivery attempt: `webhook-id` (the event's
    id, the same on every attempt, for receivers to deduplicate), `webhook-timestamp`
    (this attempt, Unix seconds) and `webhook-signature` (`v1,` + base64 HMAC-SHA256
    of `id.timestamp.body` with the secret)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body),
        "Content-Type": "application/json",
        "User-Agent": "storyforge-webhooks/1",
    }


def answer_failure(status: int) -> str | None:
    """Why an endpoint's HTTP answer does not count as delivered (2xx does). Redirects
    are not followed: a 3xx is a failure that names its status."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"the endpoint answered {status} (redirects are not followed)"
    return f"the endpoint answered {status}"
