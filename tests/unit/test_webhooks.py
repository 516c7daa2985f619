"""core/webhooks.py: the address policy (metadata, private, link-local and names
resolving to them; no traffic anywhere), the Standard Webhooks signature, answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core import webhooks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("address", "strict", "lenient"),
    [
        ("169.254.169.254", "cloud metadata", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata", "cloud metadata"),
        ("100.100.100.200", "cloud metadata", "cloud metadata"),
        ("10.0.0.1", "private address", None),
        ("192.168.1.20", "private address", None),
        ("172.16.5.4", "private address", None),
        ("fd00::1", "private address", None),
        ("127.0.0.1", "loopback address", None),
        ("::1", "loopback address", None),
        ("::ffff:127.0.0.1", "loopback address", None),
        ("169.254.10.10", "link-local address", None),
        ("fe80::1%eth0", "link-local address", None),
        ("100.64.0.1", "non-global address", None),
        ("0.0.0.0", "not a unicast address", "not a unicast address"),
        ("224.0.0.1", "not a unicast address", "not a unicast address"),
        ("240.0.0.1", "not a unicast address", "not a unicast address"),
        ("93.184.215.14", None, None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None, None),
        ("example.com", "is not an IP address", "is not an IP address"),
    ],
)
def test_address_policy(address, strict, lenient):
    for allow_private, expected in ((False, strict), (True, lenient)):
        reason = webhooks.address_refusal(address, allow_private=allow_private)
        if expected is None:
            assert reason is None, (address, allow_private)
        else:
            assert reason is not None and expected in reason, (address, allow_private, reason)
    if strict and "private" in strict or strict and "loopback" in strict:
        assert "WEBHOOK_ALLOW_PRIVATE=false" in webhooks.address_refusal(
            address, allow_private=False
        )


@pytest.mark.parametrize(
    ("url", "resolved", "expected"),
    [
        # names are judged by what they resolved to at delivery time
        (
            "http://metadata.internal/latest",
            ["169.254.169.254"],
            "refused metadata.internal: 169.254.169.254 is a cloud metadata address",
        ),
        (
            "https://hooks.example/x",
            ["93.184.215.14", "10.0.0.1"],
            "refused hooks.example: 10.0.0.1 is a private address",
        ),
        ("https://v6.example/x", ["fd00::1"], "refused v6.example: fd00::1 is a private address"),
        (
            "https://ll.example/x",
            ["169.254.1.1"],
            "refused ll.example: 169.254.1.1 is a link-local address",
        ),
        ("https://hooks.example/x", ["93.184.215.14"], None),
        ("https://hooks.example/x", [], "hooks.example resolved to no address"),
        ("ftp://hooks.example/x", ["93.184.215.14"], "is not an http(s) URL"),
    ],
)
def test_endpoint_refusal(url, resolved, expected):
    reason = webhooks.endpoint_refusal(url, resolved, allow_private=False)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


def test_signed_headers_verify_with_standardwebhooks():
    at = datetime.now(UTC)
    body = '{"data":{},"timestamp":"2026-12-01T16:00:00Z","type":"segment.ready"}'
    headers = webhooks.signed_headers(SECRET, "evt_0123456789abcdef", at, body)
    assert headers["webhook-id"] == "evt_0123456789abcdef"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {
        "data": {},
        "timestamp": "2026-12-01T16:00:00Z",
        "type": "segment.ready",
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("ready", "failed"), headers)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (204, None),
        (301, "the endpoint answered 301 (redirects are not followed)"),
        (500, "the endpoint answered 500"),
        (404, "the endpoint answered 404"),
    ],
)
def test_answers(status, expected):
    assert webhooks.answer_failure(status) == expected
