"""core.signing: CloudFront URLs and cookies made through botocore's CloudFrontSigner,
byte-identical to an independent CloudFrontSigner with the same key (the oracle), and
policies as CloudFront documents them; HMAC origin tokens (every field tampered, other
scene, expiry to the second with an injected clock, unknown and rotated keys, malformed
input); URI templates; and the signing settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from core import playlists, signing
from core.settings import ConfigError, Settings

KP = "K2JCJMDEHXQW5F"
CDN = "https://cdn.storyforge.io"
SCENE = "scn_5k2w9x0c7d3m1q8r"
OTHER = "scn_0000000000000000"
NOW = 1_767_000_000
EXP = NOW + 21600


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(private_key) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def cf_key(private_key) -> signing.CloudFrontKey:
    return signing.CloudFrontKey(KP, private_key)


@pytest.fixture(scope="module")
def oracle(private_key) -> CloudFrontSigner:
    def rsa_signer(message: bytes) -> bytes:
        return private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    return CloudFrontSigner(KP, rsa_signer)


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _cf_b64decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


# ------------------------------------------------------------------ CloudFront


@pytest.mark.parametrize(
    "resource,ip,condition",
    [
        (f"{CDN}/v/{SCENE}/*", None, f'{{"DateLessThan":{{"AWS:EpochTime":{EXP}}}}}'),
        (
            f"{CDN}/v/{SCENE}/*",
            "203.0.113.7",
            f'{{"DateLessThan":{{"AWS:EpochTime":{EXP}}},'
            '"IpAddress":{"AWS:SourceIp":"203.0.113.7/32"}}',
        ),
        (
            f"{CDN}/e/{SCENE}/full_1080p.mp4",
            "203.0.113.0/24",
            f'{{"DateLessThan":{{"AWS:EpochTime":{EXP}}},'
            '"IpAddress":{"AWS:SourceIp":"203.0.113.0/24"}}',
        ),
    ],
)
def test_policy_is_cloudfronts_custom_policy_statement(cf_key, resource, ip, condition):
    """The custom policy of CloudFront's developer guide ("Creating a signed URL using a
    custom policy"), compact, Resource before Condition, the expiry as the same unix
    second (the datetime handed to botocore converts back exactly)."""
    ours = cf_key.policy(resource, EXP, ip_address=ip)
    assert ours == f'{{"Statement":[{{"Resource":"{resource}","Condition":{condition}}}]}}'
    assert json.loads(ours)["Statement"][0]["Condition"]["DateLessThan"] == {"AWS:EpochTime": EXP}


@pytest.mark.parametrize(
    "url",
    [
        f"{CDN}/e/{SCENE}/full_1080p.mp4",
        f"{CDN}/e/{SCENE}/full_720p.mp4?download=1",
        f"{CDN}/v/{SCENE}/master.m3u8",
    ],
)
def test_canned_url_is_byte_identical_to_botocore(oracle, cf_key, private_key, url):
    ours = signing.canned_policy_url(url, EXP, cf_key)
    assert ours == oracle.generate_presigned_url(url, date_less_than=_dt(EXP))
    params = _params(ours)
    assert params["Expires"] == str(EXP) and params["Key-Pair-Id"] == KP
    # the signature is RSA-SHA1 PKCS#1 v1.5 over the canned policy statement
    policy = oracle.build_policy(url, _dt(EXP)).encode()
    private_key.public_key().verify(
        _cf_b64decode(params["Signature"]), policy, padding.PKCS1v15(), hashes.SHA1()
    )


@pytest.mark.parametrize("ip", [None, "198.51.100.23", "198.51.100.0/24"])
def test_custom_url_is_byte_identical_to_botocore(oracle, cf_key, ip):
    url = f"{CDN}/v/{SCENE}/master.m3u8"
    policy = oracle.build_policy(f"{CDN}/v/{SCENE}/*", _dt(EXP), ip_address=ip)
    ours = signing.custom_policy_url(url, policy, cf_key)
    theirs = oracle.generate_presigned_url(url, policy=policy)
    assert ours == theirs
    params = _params(ours)
    assert list(params) == ["Policy", "Signature", "Key-Pair-Id"]
    assert _cf_b64decode(params["Policy"]).decode() == policy
    # the signature alone, byte for byte
    assert _cf_b64decode(params["Signature"]) == _cf_b64decode(_params(theirs)["Signature"])


def test_mint_scene_cloudfront_signs_the_scene_prefix(oracle, cf_key):
    for bind, ip in ((False, None), (True, "192.0.2.44")):
        cfg = signing.SigningConfig(
            mode="cloudfront", cdn_base=CDN, cloudfront=cf_key, cloudfront_bind_ip=bind
        )
        grant = signing.mint_scene(cfg, SCENE, now=NOW + 0.9, client_ip="192.0.2.44")
        assert grant.expires == NOW + 21600
        url = f"{CDN}/v/{SCENE}/master.m3u8"
        policy = oracle.build_policy(f"{CDN}/v/{SCENE}/*", _dt(grant.expires), ip_address=ip)
        assert grant.apply(url) == oracle.generate_presigned_url(url, policy=policy)
        statement = json.loads(policy)["Statement"][0]
        assert statement["Resource"] == f"{CDN}/v/{SCENE}/*"
        if ip:
            assert statement["Condition"]["IpAddress"] == {"AWS:SourceIp": f"{ip}/32"}
        # one policy covers every child: the same query goes on all of them
        assert grant.apply(f"{CDN}/v/{SCENE}/seg_x/720p_0001.ts").endswith("?" + grant.query)


def test_signed_cookies_match_the_signed_url(oracle, cf_key, private_key):
    """Byte-identical to what botocore's CloudFrontSigner makes for the same policy,
    in CloudFront's URL-safe base64, and the signature verifies."""
    policy = oracle.build_policy(f"{CDN}/v/{SCENE}/*", _dt(EXP))
    cookies = signing.signed_cookies(policy, cf_key)
    params = _params(oracle.generate_presigned_url(f"{CDN}/v/{SCENE}/x", policy=policy))
    assert cookies == {
        "CloudFront-Policy": params["Policy"],
        "CloudFront-Signature": params["Signature"],
        "CloudFront-Key-Pair-Id": KP,
    }
    # CloudFront's alphabet: "+" -> "-", "=" -> "_", "/" -> "~" (a 256-byte signature
    # always ends in "==", so "__")
    for name in ("CloudFront-Policy", "CloudFront-Signature"):
        assert not set("+=/") & set(cookies[name]), cookies[name]
    assert cookies["CloudFront-Signature"].endswith("__")
    assert _cf_b64decode(cookies["CloudFront-Policy"]).decode() == policy
    private_key.public_key().verify(
        _cf_b64decode(cookies["CloudFront-Signature"]),
        policy.encode(),
        padding.PKCS1v15(),
        hashes.SHA1(),
    )
    cfg = signing.SigningConfig(mode="cloudfront", cdn_base=CDN, cloudfront=cf_key)
    minted, exp = signing.scene_cookies(cfg, SCENE, now=NOW, client_ip=None)
    assert exp == NOW + 21600 and minted == signing.signed_cookies(
        oracle.build_policy(f"{CDN}/v/{SCENE}/*", _dt(exp)), cf_key
    )


def test_mint_export_cloudfront_is_canned(oracle, cf_key):
    cfg = signing.SigningConfig(mode="cloudfront", cdn_base=CDN, cloudfront=cf_key, ttl=3600)
    url = f"{CDN}/e/{SCENE}/full_1080p.mp4"
    signed = signing.mint_export(cfg, SCENE, url, now=NOW, client_ip=None)
    assert signed == oracle.generate_presigned_url(url, date_less_than=_dt(NOW + 3600))


def test_forward_cloudfront_query():
    q = "Policy=eyJTdGF0~ZW1lbnQ_&Signature=abc-DEF~_&Key-Pair-Id=K2JCJMDEHXQW5F"
    assert signing.forward_cloudfront_query(q) == q
    # other parameters dropped, canonical order
    shuffled = "x=1&Key-Pair-Id=K2&Signature=s1&Policy=p1"
    assert signing.forward_cloudfront_query(shuffled) == "Policy=p1&Signature=s1&Key-Pair-Id=K2"
    for bad in (
        "",
        "Expires=1&Signature=s&Key-Pair-Id=K",  # canned: one URL only, never forwarded
        "Policy=p&Signature=s",
        "Policy=p&Policy=q&Signature=s&Key-Pair-Id=K",
        "Policy=p%0A%23EXT&Signature=s&Key-Pair-Id=K",
        'Policy=p"&Signature=s&Key-Pair-Id=K',
        "Policy=\u00e9&Signature=s&Key-Pair-Id=K",
        "Policy=" + "a" * 20000 + "&Signature=s&Key-Pair-Id=K",
    ):
        assert signing.forward_cloudfront_query(bad) == ""


def test_load_private_key_errors(pem):
    assert signing.load_rsa_private_key(pem).key_size == 2048
    with pytest.raises(ValueError, match="not a PEM"):
        signing.load_rsa_private_key("-----BEGIN RSA PRIVATE KEY-----\nnope\n")
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="RSA"):
        signing.load_rsa_private_key(ec_pem)
    encrypted = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="encrypted"):
        signing.load_rsa_private_key(encrypted)


# ------------------------------------------------------------------------ HMAC

K1 = signing.HmacKey("k1", b"secret-one-0123456789")
K2 = signing.HmacKey("k2", b"secret-two-0123456789")
PATH = f"/v/{SCENE}/seg_abcdefghjkmn/720p_0001.ts"


def _token(prefix=f"/v/{SCENE}/", exp=EXP, key=K1, ip=None) -> str:
    return signing.mint_token(prefix, exp, key, ip).query


def _fields(query: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in query.split("&"))


def _query(fields: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in fields.items())


def _denied(result) -> str:
    assert isinstance(result, signing.Denied), result
    return result.reason


def test_token_format_is_the_documented_one():
    query = _token()
    f = _fields(query)
    assert list(f) == ["exp", "kid", "sig"] and f["exp"] == str(EXP) and f["kid"] == "k1"
    msg = f"/v/{SCENE}/\n{EXP}\n".encode()
    digest = hmac.new(K1.secret, msg, hashlib.sha256).digest()
    assert f["sig"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    bound = _fields(_token(ip="203.0.113.9"))
    assert list(bound) == ["exp", "kid", "ip", "sig"]
    msg = f"/v/{SCENE}/\n{EXP}\n203.0.113.9".encode()
    digest = hmac.new(K1.secret, msg, hashlib.sha256).digest()
    assert bound["sig"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_valid_token_covers_every_child_of_the_scene():
    query = _token()
    for path in (
        f"/v/{SCENE}/master.m3u8",
        f"/v/{SCENE}/720p.m3u8",
        f"/v/{SCENE}/storyboard.vtt",
        f"/v/{SCENE}/seg_abcdefghjkmn/master.m3u8",
        PATH,
    ):
        result = signing.verify(query, path, "192.0.2.1", NOW, [K1])
        assert isinstance(result, signing.Ok), (path, result)
        assert result.token.query == query and result.token.scene_id == SCENE


def test_expiry_to_the_second():
    query = _token(exp=NOW + 10)
    assert isinstance(signing.verify(query, PATH, None, NOW + 9, [K1]), signing.Ok)
    assert isinstance(signing.verify(query, PATH, None, NOW + 9.999, [K1]), signing.Ok)
    assert _denied(signing.verify(query, PATH, None, NOW + 10, [K1])) == "token expired"
    assert _denied(signing.verify(query, PATH, None, NOW + 11, [K1])) == "token expired"


@pytest.mark.parametrize(
    "name,value",
    [
        ("exp", str(EXP + 1)),
        ("exp", str(EXP - 1)),
        ("kid", "k2"),  # another active key: its secret did not make this signature
        ("sig", None),  # one character flipped
        ("ip", "203.0.113.9"),  # binding added to an unbound token
    ],
)
def test_each_field_tampered_is_refused(name, value):
    f = _fields(_token())
    if name == "sig":
        s = f["sig"]
        value = ("A" if s[5] != "A" else "B").join([s[:5], s[6:]])
    f[name] = value
    reason = _denied(signing.verify(_query(f), PATH, "203.0.113.9", NOW, [K1, K2]))
    assert reason.startswith("bad signature")


def test_bound_address_tampered_or_wrong_client():
    query = _token(ip="203.0.113.9")
    assert isinstance(signing.verify(query, PATH, "203.0.113.9", NOW, [K1]), signing.Ok)
    # an IPv4-mapped IPv6 peer address is the same client
    assert isinstance(signing.verify(query, PATH, "::ffff:203.0.113.9", NOW, [K1]), signing.Ok)
    reason = _denied(signing.verify(query, PATH, "203.0.113.10", NOW, [K1]))
    assert reason == "token is bound to another client address"
    assert _denied(signing.verify(query, PATH, None, NOW, [K1])).startswith("token is bound")
    f = _fields(query)
    f["ip"] = "203.0.113.10"  # re-bound to the attacker's address
    assert _denied(signing.verify(_query(f), PATH, "203.0.113.10", NOW, [K1])).startswith("bad")
    del f["ip"]  # binding stripped
    assert _denied(signing.verify(_query(f), PATH, "203.0.113.10", NOW, [K1])).startswith("bad")
    # binding required: an unbound token is refused
    reason = _denied(signing.verify(_token(), PATH, "1.2.3.4", NOW, [K1], require_ip=True))
    assert reason == "token is not bound to a client address"


def test_token_for_another_scene_or_prefix_is_refused():
    other = _token(prefix=f"/v/{OTHER}/")
    assert _denied(signing.verify(other, PATH, None, NOW, [K1])).startswith("bad signature")
    export = _token(prefix=f"/e/{SCENE}/")
    assert _denied(signing.verify(export, PATH, None, NOW, [K1])).startswith("bad signature")
    e_path = f"/e/{SCENE}/full_1080p.mp4"
    assert isinstance(signing.verify(export, e_path, None, NOW, [K1]), signing.Ok)
    assert _denied(signing.verify(_token(), e_path, None, NOW, [K1])).startswith("bad")


def test_unknown_key_id_and_rotation():
    old = _token(key=K1)
    assert _denied(signing.verify(old, PATH, None, NOW, [K2])) == "unknown or retired key id"
    # rotation step 1: the new key signs, the old one still verifies
    cfg = signing.SigningConfig(mode="hmac", hmac_keys=(K2, K1))
    new = signing.mint_scene(cfg, SCENE, now=NOW, client_ip=None).query
    assert _fields(new)["kid"] == "k2"
    for query in (old, new):
        assert isinstance(signing.verify(query, PATH, None, NOW, cfg.hmac_keys), signing.Ok)
    # step 2: the old key is removed; its tokens are refused, the new ones accepted
    rotated = (K2,)
    assert _denied(signing.verify(old, PATH, None, NOW, rotated)) == "unknown or retired key id"
    assert isinstance(signing.verify(new, PATH, None, NOW, rotated), signing.Ok)
    # a key id reused with a new secret does not revive old tokens
    reused = (signing.HmacKey("k1", b"a-brand-new-secret-xyz"),)
    assert _denied(signing.verify(old, PATH, None, NOW, reused)).startswith("bad signature")


GOOD = _token()
GOOD_F = _fields(GOOD)


@pytest.mark.parametrize(
    "query,reason",
    [
        ("", "missing token"),
        ("foo=bar", "missing token"),
        (f"kid=k1&sig={GOOD_F['sig']}", "malformed token: no exp"),
        (f"exp={EXP}&sig={GOOD_F['sig']}", "malformed token: no kid"),
        (f"exp={EXP}&kid=k1", "malformed token: no sig"),
        (GOOD + f"&exp={EXP}", "malformed token: repeated exp"),
        (GOOD + "&sig=" + GOOD_F["sig"], "malformed token: repeated sig"),
        (GOOD.replace(f"exp={EXP}", "exp=-5"), "malformed token: exp"),
        (GOOD.replace(f"exp={EXP}", "exp=1e9"), "malformed token: exp"),
        (GOOD.replace(f"exp={EXP}", "exp=" + "9" * 400), "malformed token: exp"),
        (GOOD.replace(f"exp={EXP}", "exp=\u0661\u0662\u0663"), "malformed token: exp"),
        (GOOD.replace(f"exp={EXP}", "exp=%C2%B2"), "malformed token: exp"),
        (GOOD.replace("kid=k1", "kid=k%FF1"), "malformed token: kid"),
        (GOOD.replace("kid=k1", "kid=" + "k" * 33), "malformed token: kid"),
        (GOOD.replace("kid=k1", "kid=k\u00e91"), "malformed token: kid"),
        (GOOD.replace(GOOD_F["sig"], GOOD_F["sig"] + "="), "malformed token: sig"),
        (GOOD.replace(GOOD_F["sig"], GOOD_F["sig"][:-1] + "\u00e9"), "malformed token: sig"),
        (GOOD.replace(GOOD_F["sig"], "%00" * 43), "malformed token: sig"),
        (GOOD.replace(GOOD_F["sig"], GOOD_F["sig"][:-1] + "+"), "malformed token: sig"),
        (GOOD + "&ip=not-an-ip", "malformed token: ip"),
        (GOOD + "&ip=fe80::1%25eth0", "malformed token: ip"),
        (GOOD + "&ip=010.1.1.1", "malformed token: ip"),
        (GOOD + "&x=" + "a" * 5000, "malformed token: query too long"),
    ],
)
def test_malformed_tokens(query, reason):
    got = _denied(signing.verify(query, PATH, "192.0.2.1", NOW, [K1]))
    assert got.startswith(reason), got


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        "/v/",
        "/v/scn_short/x.ts",
        "/v/SCN_5K2W9X0C7D3M1Q8R/x.ts",
        "/v/seg_5k2w9x0c7d3m1q8r/x.ts",
        "/v/../etc/passwd",
        f"/x/{SCENE}/master.m3u8",
        f"/v/{SCENE}",
        f"/v/{SCENE}\u00e9/x",
        "/v/" + "a" * 10000 + "/x",
    ],
)
def test_paths_that_name_no_scene_are_refused_first(path):
    reason = _denied(signing.verify(GOOD, path, None, NOW, [K1]))
    assert reason == "the path does not name a scene"


@settings(max_examples=300, deadline=None)
@given(query=st.text(max_size=300), path=st.text(max_size=80), ip=st.none() | st.text(max_size=50))
def test_garbage_never_raises_and_never_passes(query, path, ip):
    result = signing.verify(query, path, ip, NOW, [K1, K2])
    assert isinstance(result, signing.Denied)
    assert isinstance(signing.verify(query, PATH, ip, NOW, [K1]), signing.Denied)


def test_extra_parameters_are_ignored_and_dropped_from_children():
    result = signing.verify("a=1&" + GOOD + "&_HLS_msn=3", PATH, None, NOW, [K1])
    assert isinstance(result, signing.Ok) and result.token.query == GOOD


def test_hmac_keys_parsing():
    keys = signing.parse_hmac_keys(" new:0123456789abcdef0123 , old:abcdefghijklmnop:q ,")
    assert [k.kid for k in keys] == ["new", "old"]
    assert keys[1].secret == b"abcdefghijklmnop:q"
    assert "0123" not in repr(keys)  # secrets never in repr
    for bad, message in (
        ("k1", "entry 1 is not kid:secret"),
        ("k1:", "entry 1 is not kid:secret"),
        ("k1:0123456789abcdef,k1:0123456789abcdef", "appears twice"),
        ("k 1:0123456789abcdef", "key id"),
        ("k1:short", "shorter than 16"),
    ):
        with pytest.raises(ValueError, match=message):
            signing.parse_hmac_keys(bad)


def test_mint_scene_hmac_and_binding():
    cfg = signing.SigningConfig(mode="hmac", hmac_keys=(K1,), ttl=600, hmac_bind_ip=True)
    grant = signing.mint_scene(cfg, SCENE, now=NOW, client_ip="::ffff:192.0.2.5")
    assert grant.expires == NOW + 600 and _fields(grant.query)["ip"] == "192.0.2.5"
    assert isinstance(
        signing.verify(grant.query, PATH, "192.0.2.5", NOW, cfg.hmac_keys, require_ip=True),
        signing.Ok,
    )
    with pytest.raises(ValueError):
        signing.mint_scene(cfg, SCENE, now=NOW, client_ip=None)
    with pytest.raises(ValueError):
        signing.mint_scene(cfg, "../etc", now=NOW, client_ip="192.0.2.5")
    off = signing.SigningConfig()
    assert signing.mint_scene(off, SCENE, now=NOW, client_ip=None) == signing.NO_GRANT
    assert signing.mint_export(off, SCENE, "/e/x.mp4", now=NOW, client_ip=None) == "/e/x.mp4"


def test_mint_export_hmac_covers_the_export_prefix_only():
    cfg = signing.SigningConfig(mode="hmac", hmac_keys=(K1,))
    url = signing.mint_export(cfg, SCENE, f"/e/{SCENE}/full_1080p.mp4", now=NOW, client_ip=None)
    path, _, query = url.partition("?")
    assert isinstance(signing.verify(query, path, None, NOW, [K1]), signing.Ok)
    assert isinstance(signing.verify(query, PATH, None, NOW, [K1]), signing.Denied)


def test_mint_references_hmac_covers_the_scenes_references_only():
    cfg = signing.SigningConfig(mode="hmac", hmac_keys=(K1,))
    grant = signing.mint_references(cfg, SCENE, now=NOW, client_ip=None)
    assert grant.expires == EXP
    msg = f"/a/scenes/{SCENE}/reference/\n{EXP}\n".encode()
    digest = hmac.new(K1.secret, msg, hashlib.sha256).digest()
    assert _fields(grant.query)["sig"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    for name in ("style_frame.png", "voice_anchor.wav", "char_ent_0123456789ab_portrait.png"):
        result = signing.verify(grant.query, f"/a/scenes/{SCENE}/reference/{name}", None, NOW, [K1])
        assert isinstance(result, signing.Ok), name
        assert result.token.scene_id == SCENE
    # not the scene's media, not another scene's references, not the poster
    for path in (
        PATH,
        f"/a/scenes/{OTHER}/reference/style_frame.png",
        f"/a/scenes/{SCENE}/poster.jpg",
    ):
        assert isinstance(signing.verify(grant.query, path, None, NOW, [K1]), signing.Denied)
    # nor does the scene's media token open its references
    media = signing.mint_scene(cfg, SCENE, now=NOW, client_ip=None).query
    ref = f"/a/scenes/{SCENE}/reference/style_frame.png"
    assert _denied(signing.verify(media, ref, None, NOW, [K1])).startswith("bad signature")


def test_mint_references_cloudfront_policy_covers_the_reference_prefix(oracle, cf_key):
    cfg = signing.SigningConfig(mode="cloudfront", cdn_base=CDN, cloudfront=cf_key)
    grant = signing.mint_references(cfg, SCENE, now=NOW, client_ip=None)
    url = f"{CDN}/a/scenes/{SCENE}/reference/style_frame.png"
    resource = f"{CDN}/a/scenes/{SCENE}/reference/*"
    policy = oracle.build_policy(resource, _dt(grant.expires))
    assert grant.apply(url) == oracle.generate_presigned_url(url, policy=policy)
    assert signing.mint_references(signing.SigningConfig(), SCENE, now=NOW, client_ip=None) == (
        signing.NO_GRANT
    )
    with pytest.raises(ValueError):
        signing.mint_references(cfg, "scn_../x", now=NOW, client_ip=None)


# ---------------------------------------------------------------- templates


def test_apply_query_and_marks():
    assert signing.apply_query("a.ts", "") == "a.ts"
    assert signing.apply_query("a.ts", "q=1") == "a.ts?q=1"
    assert signing.apply_query("a.ts?x=2", "q=1") == "a.ts?x=2&q=1"
    assert signing.apply_query("s.jpg#xywh=0,0,1,1", "q=1") == "s.jpg?q=1#xywh=0,0,1,1"
    for uri in ("a.ts", "a.ts?x=2", "s.jpg#xywh=0,0,1,1", "https://c/x?y#z"):
        template = signing.mark_uri(uri).encode()
        assert signing.render(template, "q=1").decode() == signing.apply_query(uri, "q=1")
        assert signing.render(template, "").decode() == uri


def _clip(seg: str, n: int) -> playlists.Clip:
    r = {
        p: playlists.Rendition(p, w, h, 30.0, "avc1.64001f,mp4a.40.2", [4.0] * n, [9000] * n, 1, 1)
        for p, w, h in (("720p", 1280, 720), ("1080p", 1920, 1080))
    }
    cues = (playlists.StoryboardCue(0.0, 4.0, 0, 0, 160, 90),)
    return playlists.Clip(seg, 4.0 * n, r, cues)


def test_templates_of_stitched_documents_equal_signed_builds():
    clips = [_clip(f"seg_{i:012d}", 3) for i in range(50)]
    q = _token()
    base = lambda rel: f"{CDN}/v/{SCENE}/{rel}"  # noqa: E731
    signed = lambda rel: signing.apply_query(base(rel), q)  # noqa: E731
    marked = signing.marking(base)
    target = playlists.scene_target_duration(clips)
    pairs = [
        (
            playlists.stitched_media(clips, "720p", target=target, uri_for=marked),
            playlists.stitched_media(clips, "720p", target=target, uri_for=signed),
        ),
        (
            playlists.stitched_master(clips, ["720p", "1080p"], uri_for=marked),
            playlists.stitched_master(clips, ["720p", "1080p"], uri_for=signed),
        ),
        (
            playlists.stitched_storyboard_vtt(clips, uri_for=marked),
            playlists.stitched_storyboard_vtt(clips, uri_for=signed),
        ),
    ]
    for template, expected in pairs:
        assert signing.render(template.encode(), q).decode() == expected
        assert signing.render(template.encode(), "").decode() == expected.replace("?" + q, "")
    vtt = pairs[2][1]
    assert f"storyboard.jpg?{q}#xywh=0,0,160,90" in vtt


def test_templates_of_segment_documents():
    r = playlists.Rendition("720p", 1280, 720, 30.0, "avc1.64001f", [4.0, 2.0], [1, 2], 8, 8)
    clip = playlists.Clip(
        "seg_a", 6.0, {"720p": r}, (playlists.StoryboardCue(0.0, 2.0, 0, 0, 160, 90, "s.jpg"),)
    )
    q = _token()
    marked = signing.marking(str)

    def signed(rel: str) -> str:
        return signing.apply_query(rel, q)

    pairs = [
        (
            playlists.clip_media_playlist(r, uri_for=marked),
            playlists.clip_media_playlist(r, uri_for=signed),
        ),
        (
            playlists.clip_master_playlist([r], uri_for=marked),
            playlists.clip_master_playlist([r], uri_for=signed),
        ),
        (
            playlists.clip_storyboard_vtt(clip, uri_for=marked),
            playlists.clip_storyboard_vtt(clip, uri_for=signed),
        ),
    ]
    for template, expected in pairs:
        assert signing.render(template.encode(), q).decode() == expected
        assert signing.render(template.encode(), "").decode() == expected.replace("?" + q, "")
    assert f"720p_0002.ts?{q}\n" in pairs[0][1]
    assert f"s.jpg?{q}#xywh=0,0,160,90" in pairs[2][1]


# ------------------------------------------------------------------ settings


def test_signing_settings_defaults():
    s = Settings.from_env({})
    assert s.signing == "none" and s.signed_url_ttl == 21600
    assert s.hmac_keys == () and not s.hmac_bind_ip and not s.cloudfront_bind_ip
    assert s.origin_secret_header == "X-Origin-Secret" and s.origin_secret == ""
    assert not s.signing_config().enabled


def test_cloudfront_settings_from_file_and_env(tmp_path, pem):
    path = tmp_path / "cf.pem"
    path.write_text(pem)
    env = {
        "SIGNING": "cloudfront",
        "CLOUDFRONT_KEY_PAIR_ID": KP,
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(path),
        "CDN_BASE_URL": CDN,
        "SIGNED_URL_TTL": "3600",
        "CLOUDFRONT_BIND_IP": "true",
        "ORIGIN_SECRET": "0123456789abcdef-origin",
        "ORIGIN_SECRET_HEADER": "X-StoryForge-Origin",
    }
    s = Settings.from_env(env)
    assert s.cloudfront_private_key == pem and s.signed_url_ttl == 3600 and s.cloudfront_bind_ip
    assert "PRIVATE" not in repr(s) and "0123456789abcdef-origin" not in repr(s)
    cfg = s.signing_config()
    assert cfg.mode == "cloudfront" and cfg.cloudfront.key_pair_id == KP and cfg.ttl == 3600
    inline = {k: v for k, v in env.items() if k != "CLOUDFRONT_PRIVATE_KEY_FILE"}
    inline["CLOUDFRONT_PRIVATE_KEY"] = pem.replace("\n", "\\n")  # one-line env form
    assert Settings.from_env(inline).cloudfront_private_key.strip() == pem.strip()


def test_hmac_settings():
    s = Settings.from_env(
        {"SIGNING": "hmac", "HMAC_KEYS": "k2:0123456789abcdefXYZ,k1:abcdefghijklmnopq"}
    )
    assert [k.kid for k in s.hmac_keys] == ["k2", "k1"] and not s.hmac_bind_ip
    assert "0123456789" not in repr(s)
    assert s.signing_config().hmac_keys[0].kid == "k2"


@pytest.mark.parametrize(
    "env,name",
    [
        ({"SIGNING": "cloudfront"}, "CLOUDFRONT_PRIVATE_KEY_FILE"),
        (
            {"SIGNING": "cloudfront", "CDN_BASE_URL": CDN, "CLOUDFRONT_KEY_PAIR_ID": KP},
            "CLOUDFRONT_PRIVATE_KEY_FILE",
        ),
        ({"CLOUDFRONT_PRIVATE_KEY_FILE": "/nonexistent/cf.pem"}, "CLOUDFRONT_PRIVATE_KEY_FILE"),
        ({"CLOUDFRONT_PRIVATE_KEY": "not a key"}, "CLOUDFRONT_PRIVATE_KEY"),
        ({"CLOUDFRONT_KEY_PAIR_ID": "K2/../x"}, "CLOUDFRONT_KEY_PAIR_ID"),
        ({"SIGNING": "hmac"}, "HMAC_KEYS"),
        ({"SIGNING": "hmac", "HMAC_KEYS": "k1:short"}, "HMAC_KEYS"),
        ({"HMAC_KEYS": "k1:0123456789abcdef,k1:0123456789abcdef"}, "HMAC_KEYS"),
        ({"HMAC_KEYS": "nocolon"}, "HMAC_KEYS"),
        ({"HMAC_BIND_IP": "maybe"}, "HMAC_BIND_IP"),
        ({"CLOUDFRONT_BIND_IP": "2"}, "CLOUDFRONT_BIND_IP"),
        ({"SIGNED_URL_TTL": "0"}, "SIGNED_URL_TTL"),
        ({"SIGNED_URL_TTL": "6h"}, "SIGNED_URL_TTL"),
        ({"ORIGIN_SECRET": "short"}, "ORIGIN_SECRET"),
        ({"ORIGIN_SECRET_HEADER": "X Bad: header"}, "ORIGIN_SECRET_HEADER"),
        ({"CLOUDFRONT_COOKIE_DOMAIN": "bad domain"}, "CLOUDFRONT_COOKIE_DOMAIN"),
    ],
)
def test_signing_errors_name_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(name + ":"), str(err.value)


def test_cloudfront_needs_a_cdn_base(tmp_path, pem):
    path = tmp_path / "cf.pem"
    path.write_text(pem)
    env = {"SIGNING": "cloudfront", "CLOUDFRONT_KEY_PAIR_ID": KP}
    with pytest.raises(ConfigError, match="^CDN_BASE_URL:"):
        Settings.from_env({**env, "CLOUDFRONT_PRIVATE_KEY_FILE": str(path)})
    with pytest.raises(ConfigError, match="^CLOUDFRONT_KEY_PAIR_ID: required"):
        Settings.from_env(
            {"SIGNING": "cloudfront", "CDN_BASE_URL": CDN, "CLOUDFRONT_PRIVATE_KEY_FILE": str(path)}
        )
    with pytest.raises(ConfigError, match="^CLOUDFRONT_PRIVATE_KEY_FILE: set either"):
        Settings.from_env(
            {**env, "CLOUDFRONT_PRIVATE_KEY_FILE": str(path), "CLOUDFRONT_PRIVATE_KEY": pem}
        )
