"""infra/ (terraform for AWS) checked against the code it deploys.

`terraform validate` needs the AWS provider, which cannot be downloaded here, so
infra/ is parsed with python-hcl2 and its decisions are compared with the Python code
they depend on: bucket names and the secret header with core.settings, lifecycle
tags with core.layout, CloudFront TTLs with the Cache-Control the origin sends,
signing query strings with core.signing, IAM grants with the S3/CloudFront calls in
core/, origin/ and workers/, task commands with the real argument parser. A change on
either side that breaks the pairing fails here. checkov and `terraform fmt` run in
scripts/check (checks/test_deploy.py), not here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from core import layout, signing
from core.settings import Settings
from origin.http.auth import is_signed_path
from tests.helpers.tools import (
    HCL2_PYTHON,
    INFRA,
    ROOT,
    Terraform,
    blocks,
    load_infra,
    missing_tool_reason,
    ref,
)

SCENE_BUCKETS = ("videos", "assets", "exports", "internal")
SCENE = "scn_0123456789abcdef"
SEGMENT = "seg_0123456789abcdef"


@pytest.fixture(scope="module")
def tf() -> Terraform:
    if not HCL2_PYTHON.exists():
        pytest.skip(missing_tool_reason(HCL2_PYTHON))
    return load_infra()


# --------------------------------------------------------------------------- checkov


def test_skip_annotations_name_a_check_and_a_reason():
    seen = 0
    for path in sorted(INFRA.glob("*.tf")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" not in line:
                continue
            seen += 1
            m = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
            assert m, f"{path.name}:{n}: write #checkov:skip=CKV_AWS_N:reason"
            assert len(m.group(2).strip()) >= 20, f"{path.name}:{n}: the reason is too thin"
    assert seen, "expected the skipped checks to be annotated in infra/*.tf"


# --------------------------------------------------------------------------- buckets


def bucket_name(tf: Terraform, role: str) -> str:
    return tf.resource("aws_s3_bucket", role)["bucket"]


def test_four_buckets_named_as_the_origin_expects(tf):
    defaults = Settings()
    expected = {
        "videos": defaults.videos_bucket,
        "assets": defaults.assets_bucket,
        "exports": defaults.exports_bucket,
        "internal": defaults.internal_bucket,
    }
    for role, name in expected.items():
        assert bucket_name(tf, role) == f"${{var.{role}_bucket}}"
        assert tf.default(f"{role}_bucket") == name
    # the four, plus the access-log sink
    assert set(tf.of_type("aws_s3_bucket")) == {*SCENE_BUCKETS, "logs"}
    scene_buckets = tf.locals["scene_buckets"]
    assert scene_buckets == {r: f"${{aws_s3_bucket.{r}}}" for r in SCENE_BUCKETS}


def test_buckets_block_public_access_encrypt_and_enforce_ownership(tf):
    for rtype in (
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_ownership_controls",
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_policy",
    ):
        res = tf.resource(rtype, "scene")
        assert res["for_each"] == "${local.scene_buckets}", rtype
    pab = tf.resource("aws_s3_bucket_public_access_block", "scene")
    for key in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert pab[key] is True, key
    [rule] = blocks(tf.resource("aws_s3_bucket_ownership_controls", "scene")["rule"])
    assert rule["object_ownership"] == "BucketOwnerEnforced"
    [rule] = blocks(
        tf.resource("aws_s3_bucket_server_side_encryption_configuration", "scene")["rule"]
    )
    [default] = blocks(rule["apply_server_side_encryption_by_default"])
    assert default["sse_algorithm"] in ("AES256", "aws:kms")


def test_versioning_off_for_immutable_videos_on_for_assets(tf):
    def status(role: str) -> str:
        res = tf.resource("aws_s3_bucket_versioning", role)
        assert res["bucket"] == f"${{aws_s3_bucket.{role}.id}}"
        [conf] = blocks(res["versioning_configuration"])
        return conf["status"]

    assert status("videos") == "Disabled"
    assert status("assets") == "Enabled"
    assert status("exports") == "Disabled"  # regenerable
    assert status("internal") == "Disabled"  # scratch


def lifecycle_rules(tf: Terraform, role: str) -> list[dict[str, Any]]:
    conf = tf.resource("aws_s3_bucket_lifecycle_configuration", role)
    assert conf["bucket"] == f"${{aws_s3_bucket.{role}.id}}"
    rules = list(blocks(conf["rule"]))
    for rule in rules:
        assert rule["status"] == "Enabled", rule["id"]
    return rules


def rule_tag(rule: Mapping[str, Any]) -> tuple[str, str] | None:
    for f in blocks(rule.get("filter", [])):
        assert "prefix" not in f, (
            f"rule {rule['id']}: keys carry no bucket prefix (DESIGN.md Storage); "
            "filter by the type tag or not at all"
        )
        for tag in blocks(f.get("tag", [])):
            return tag["key"], tag["value"]
    return None


def test_lifecycle_rules_per_bucket_by_type_tag(tf):
    for role in SCENE_BUCKETS:
        rules = lifecycle_rules(tf, role)
        aborts = [r for r in rules if "abort_incomplete_multipart_upload" in r]
        assert len(aborts) == 1, f"{role}: one rule aborts incomplete multipart uploads"
        [abort] = blocks(aborts[0]["abort_incomplete_multipart_upload"])
        assert abort["days_after_initiation"] == 1
        assert rule_tag(aborts[0]) is None  # S3 refuses it in a tag-filtered rule

    # videos: sources (as the transcoder tags them) to Glacier after 90 days
    source_tag = layout.file_meta("source.mp4").tag
    hls_tags = {
        layout.file_meta(n).tag
        for n in ("720p.m3u8", layout.media_segment_name("720p", 1), "thumbnail.jpg")
    }
    rules = lifecycle_rules(tf, "videos")
    to_glacier = [r for r in rules if rule_tag(r) == ("type", source_tag)]
    assert len(to_glacier) == 1, f"videos: one rule for type={source_tag}"
    [transition] = blocks(to_glacier[0]["transition"])
    assert transition["days"] == 90
    assert transition["storage_class"].startswith("GLACIER")
    # HLS files stay in STANDARD: no rule that could move or expire them
    for rule in rules:
        acts = {"transition", "expiration", "noncurrent_version_transition"} & set(rule)
        if acts:
            tag = rule_tag(rule)
            assert tag is not None and tag[1] not in hls_tags, (
                f"videos rule {rule['id']} would touch HLS files"
            )

    def expiry_days(role: str) -> int:
        expiring = [r for r in lifecycle_rules(tf, role) if "expiration" in r]
        assert len(expiring) == 1, role
        assert rule_tag(expiring[0]) is None, f"{role}: everything in the bucket expires"
        [exp] = blocks(expiring[0]["expiration"])
        return exp["days"]

    assert expiry_days("exports") == 30
    assert expiry_days("internal") == 7
    assert not [r for r in lifecycle_rules(tf, "assets") if "expiration" in r]


# --------------------------------------------------------------------------- CloudFront


def distribution(tf: Terraform) -> dict[str, Any]:
    return tf.resource("aws_cloudfront_distribution", "cdn")


def test_cloudfront_pulls_from_the_origin_server_with_the_secret_header(tf):
    cdn = distribution(tf)
    [origin] = blocks(cdn["origin"])
    assert "s3_origin_config" not in origin and "origin_access_control_id" not in origin
    assert origin["domain_name"] == "${var.origin_domain_name}"
    [custom] = blocks(origin["custom_origin_config"])
    assert custom["origin_protocol_policy"] == "https-only"
    [header] = blocks(origin["custom_header"])
    assert header["name"] == "${var.origin_secret_header}"
    assert tf.default("origin_secret_header") == Settings().origin_secret_header
    assert header["value"] == "${random_password.origin_secret.result}"
    # ... the origin gets the same value as ORIGIN_SECRET, the ALB admits by it
    version = tf.resource("aws_secretsmanager_secret_version", "origin_secret")
    assert version["secret_string"] == header["value"]
    assert (
        "ORIGIN_SECRET = aws_secretsmanager_secret.origin_secret.arn"
        in (tf.locals["origin_secrets"])
    )
    rule = tf.resource("aws_lb_listener_rule", "from_cdn")
    [condition] = blocks(rule["condition"])
    [http_header] = blocks(condition["http_header"])
    assert http_header["http_header_name"] == "${var.origin_secret_header}"
    assert http_header["values"] == ["${random_password.origin_secret.result}"]

    for behavior in [
        *blocks(cdn["ordered_cache_behavior"]),
        *blocks(cdn["default_cache_behavior"]),
    ]:
        assert behavior["target_origin_id"] == origin["origin_id"]
        assert behavior["viewer_protocol_policy"] in ("https-only", "redirect-to-https")
    patterns = {b["path_pattern"] for b in blocks(cdn["ordered_cache_behavior"])}
    for prefix in ("/v/*", "/e/*", "/a/*"):
        assert prefix in patterns
    [cert] = blocks(cdn["viewer_certificate"])
    assert cert["minimum_protocol_version"] == "TLSv1.2_2021"
    assert cert["ssl_support_method"] == "sni-only"
    assert cdn["http_version"] == "http2and3"


def cloudfront_match(pattern: str, path: str) -> bool:
    """CloudFront path patterns: `*` is any run of characters (slashes too), `?` one."""
    return fnmatchcase(path, pattern.replace("[", "[[]"))


def behavior_for(tf: Terraform, path: str) -> dict[str, Any]:
    cdn = distribution(tf)
    for behavior in blocks(cdn["ordered_cache_behavior"]):
        if cloudfront_match(behavior["path_pattern"], path):
            return behavior
    [default] = blocks(cdn["default_cache_behavior"])
    return default


def ttls(tf: Terraform, behavior: Mapping[str, Any]) -> tuple[int, int, int]:
    """(min, default, max) TTL of the behavior's cache policy."""
    policy_id = behavior["cache_policy_id"]
    keyed = ref(policy_id, r'aws_cloudfront_cache_policy\.kind\["(\w+)"\]\.id')
    if keyed:
        policy = tf.resource("aws_cloudfront_cache_policy", "kind")
        assert policy["default_ttl"] == policy["max_ttl"] == "${each.value.ttl}"
        ttl = tf.locals["cache_policies"][keyed[0]]["ttl"]
        return policy["min_ttl"], ttl, ttl
    [name] = ref(policy_id, r"aws_cloudfront_cache_policy\.(\w+)\.id")
    policy = tf.resource("aws_cloudfront_cache_policy", name)
    return policy["min_ttl"], policy["default_ttl"], policy["max_ttl"]


def max_age(cache_control: str) -> int:
    m = re.search(r"(?:^|,)\s*max-age=(\d+)", cache_control)
    assert m, cache_control
    return int(m.group(1))


def origin_answers() -> Iterator[tuple[str, str, bool]]:
    """(CDN path, the Cache-Control the origin sends for it, is it a file kind with a
    cache policy of its own), from core.layout: what the handlers send."""
    for name in (
        layout.media_segment_name("720p", 1),
        layout.media_segment_name("1080p", 123),
        "master.m3u8",
        "720p.m3u8",
        "thumbnail.jpg",
        "thumbnail_large.jpg",
        "storyboard.jpg",
        "storyboard_2.jpg",
        "storyboard.vtt",
    ):
        assert layout.is_segment_file(name)
        yield layout.cdn_path(SCENE, SEGMENT, name), layout.file_meta(name).cache_control, True
    # files under /v/ without a kind of their own: the origin's header decides
    for name in ("metadata.json", "source.mp4"):
        assert layout.is_segment_file(name)
        yield layout.cdn_path(SCENE, SEGMENT, name), layout.file_meta(name).cache_control, False
    # stitched scene documents (origin/handlers/playback.py scene_document)
    for name in ("master.m3u8", "720p.m3u8", "1080p.m3u8", "storyboard.vtt"):
        yield layout.cdn_path(SCENE, None, name), layout.SCENE_PLAYLIST_CACHE, True
    for name in ("full_720p.mp4", "moment_1080p.mp4", layout.EXPORT_MANIFEST):
        export = layout.export_path(SCENE, "exp_0123456789abcdef", name)
        yield export, layout.EXPORT_META.cache_control, True
    for key in (
        layout.avatar_key("usr_0123456789abcdef"),
        layout.topic_icon_key("top_0123456789abcdef"),
        layout.poster_key(SCENE),
        layout.reference_key(SCENE, layout.STYLE_FRAME),
        layout.reference_key(SCENE, layout.VOICE_ANCHOR),
        layout.reference_key(SCENE, layout.portrait_name("ent_0123456789abcdef")),
    ):
        assert layout.is_asset_key(key)
        yield layout.asset_path(key), layout.asset_meta(key).cache_control, True


def signed_path(path: str) -> bool:
    """What the origin's signing guard checks (and so what CloudFront must sign)."""
    assert path.startswith(("/v/", "/e/", "/a/")), path
    return is_signed_path(path)


def test_cache_ttls_equal_the_cache_control_the_origin_sends(tf):
    for path, cache_control, own_policy in origin_answers():
        behavior = behavior_for(tf, path)
        assert "path_pattern" in behavior, f"{path} falls to the default (404) behavior"
        lo, default, hi = ttls(tf, behavior)
        where = f"{path} -> {behavior['path_pattern']}"
        # min 0: a `private`/`no-store` answer is never kept by CloudFront
        assert lo == 0, where
        if own_policy:
            assert default == hi == max_age(cache_control), (
                f"{where}: TTL {default}/{hi} but the origin sends {cache_control!r}"
            )
        else:
            assert default == 0 and hi >= max_age(cache_control), where


def test_paths_outside_the_media_prefixes_never_reach_the_origin(tf):
    for path in ("/", "/api/v1/scenes", "/metrics", "/readyz", f"/player/{SCENE}"):
        behavior = behavior_for(tf, path)
        assert "path_pattern" not in behavior, path
        [assoc] = blocks(behavior["function_association"])
        assert assoc["event_type"] == "viewer-request"
        assert assoc["function_arn"] == "${aws_cloudfront_function.not_found.arn}"
    code = tf.resource("aws_cloudfront_function", "not_found")["code"]
    assert "statusCode: 404" in code


def query_names(query: str) -> list[str]:
    return [part.split("=", 1)[0] for part in query.split("&")]


def test_signing_query_strings_are_the_ones_the_code_uses(tf):
    names = tf.locals["signing_query_strings"]
    key = signing.HmacKey("k1", b"0123456789abcdef0123")
    token = signing.mint_token(f"/v/{SCENE}/", 2_000_000_000, key, ip="203.0.113.9")
    assert sorted(names["hmac"]) == sorted(query_names(token.query))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cf = signing.SigningConfig(
        mode="cloudfront",
        cdn_base="https://cdn.example",
        cloudfront=signing.CloudFrontKey("K2JCJMDEHXQW5F", rsa_key),
    )
    grant = signing.mint_scene(cf, SCENE, now=2_000_000_000, client_ip=None)
    assert sorted(names["cloudfront"]) == sorted(query_names(grant.query))
    assert names["none"] == []
    assert set(names) == {"none", "cloudfront", "hmac"}
    assert tf.variables["signing_mode"]["validation"]
    assert tf.locals["signing_query"] == "${local.signing_query_strings[var.signing_mode]}"

    # the origin request policy forwards exactly those, and nothing else
    orp = tf.resource("aws_cloudfront_origin_request_policy", "signed")
    [cookies] = blocks(orp["cookies_config"])
    [headers] = blocks(orp["headers_config"])
    [queries] = blocks(orp["query_strings_config"])
    assert cookies["cookie_behavior"] == "none" and headers["header_behavior"] == "none"
    [dynamic] = blocks(queries["dynamic"])
    assert dynamic["query_strings"]["for_each"] == (
        "${length(local.signing_query) > 0 ? [local.signing_query] : []}"
    )
    # media and documents of /v/ and /e/ get it, and scene references; other assets not
    for path, _, _ in origin_answers():
        behavior = behavior_for(tf, path)
        if signed_path(path):
            assert behavior["origin_request_policy_id"] == (
                "${aws_cloudfront_origin_request_policy.signed.id}"
            ), path
        else:
            assert "origin_request_policy_id" not in behavior, path


def test_signed_documents_keep_the_viewers_query_in_their_cache_key(tf):
    """Playlists and VTTs carry the viewer's authorisation on every URI inside them, so
    a cached copy must never be shared between two signatures; in hmac mode the origin
    verifies media too, so media keys carry the token as well."""
    policies = tf.locals["cache_policies"]
    assert tf.locals["document_key_query"] == "${local.signing_query}"
    assert tf.locals["media_key_query"] == (
        '${var.signing_mode == "hmac" ? local.signing_query : []}'
    )
    for path, _, _ in origin_answers():
        behavior = behavior_for(tf, path)
        keyed = ref(behavior["cache_policy_id"], r'kind\["(\w+)"\]')
        if not keyed:
            continue
        query = policies[keyed[0]]["query"]
        if not signed_path(path):
            assert query == [], path
        elif path.endswith((".m3u8", ".vtt")):
            assert query == "${local.document_key_query}", path
        else:
            assert query == "${local.media_key_query}", path


def test_trusted_key_group_guards_media_in_cloudfront_mode(tf):
    group = tf.resource("aws_cloudfront_key_group", "signing")
    assert group["items"] == ["${aws_cloudfront_public_key.signing[0].id}"]
    key = tf.resource("aws_cloudfront_public_key", "signing")
    assert key["encoded_key"] == "${var.cloudfront_public_key_pem}"
    assert tf.locals["trusted_key_groups"] == (
        '${var.signing_mode == "cloudfront" ? [aws_cloudfront_key_group.signing[0].id] : []}'
    )
    for path, _, _ in origin_answers():
        behavior = behavior_for(tf, path)
        if signed_path(path):
            assert behavior["trusted_key_groups"] == "${local.trusted_key_groups}", path
        else:
            assert "trusted_key_groups" not in behavior, path
    # the origin signs with the matching key id and private key
    assert (
        "CLOUDFRONT_KEY_PAIR_ID = aws_cloudfront_public_key.signing[0].id"
        in (tf.locals["origin_environment"])
    )
    assert (
        "CLOUDFRONT_PRIVATE_KEY = var.cloudfront_private_key_secret_arn"
        in (tf.locals["origin_secrets"])
    )


# --------------------------------------------------------------------------- IAM

# S3/CloudFront API operation (aiobotocore method name) -> the IAM actions it needs.
# Writes carry Tagging (every object has its `type` tag), which needs PutObjectTagging;
# CopyObject with TaggingDirective=COPY reads the source's tags.
IAM_ACTIONS: dict[str, set[str]] = {
    "put_object": {"s3:PutObject", "s3:PutObjectTagging"},
    "create_multipart_upload": {"s3:PutObject", "s3:PutObjectTagging"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "upload_part_copy": {"s3:GetObject", "s3:PutObject"},
    "copy_object": {"s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:PutObjectTagging"},
    "head_object": {"s3:GetObject"},
    "get_object": {"s3:GetObject"},
    "get_object_tagging": {"s3:GetObjectTagging"},
    "list_objects_v2": {"s3:ListBucket"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
    "head_bucket": {"s3:ListBucket"},
    "create_invalidation": {"cloudfront:CreateInvalidation"},
}
# Operations the code can make that production must not need.
NOT_GRANTED = {
    "create_bucket": "terraform creates the buckets; ensure_buckets() creates one only "
    "after HeadBucket answered 404",
    "list_buckets": "ping() uses it only when no bucket was ensured; the origin ensures "
    "its buckets at start-up and pings with HeadBucket",
}
# Actions a task role may hold besides S3 object/bucket actions.
OTHER_ACTIONS = {
    "cloudfront:CreateInvalidation",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:DescribeLogStreams",
}


def operations_in_code() -> Counter[str]:
    """Every S3/CloudFront operation core/, origin/ and workers/ call through
    aiobotocore: `client.<op>(`, `get_paginator("<op>")` and `_call("<op>"` forms."""
    found: Counter[str] = Counter()
    patterns = (
        r"client\.([a-z][a-z0-9_]*)\(",
        r'get_paginator\(\s*"([a-z0-9_]+)"',
        r'_call\(\s*"([a-z0-9_]+)"',
    )
    for package in ("core", "origin", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            for pattern in patterns:
                for op in re.findall(pattern, text):
                    if op != "get_paginator":
                        found[op] += 1
    return found


def statements(tf: Terraform, document: str) -> list[dict[str, Any]]:
    return list(blocks(tf.data[("aws_iam_policy_document", document)]["statement"]))


def resolve_resources(tf: Terraform, resources: Any) -> set[str]:
    """Statement resources as `bucket role` (a bucket), `bucket role/...` (its objects)
    or the expression itself for anything else."""
    if resources == "${local.scene_bucket_arns}":
        assert tf.locals["scene_bucket_arns"] == "${[for b in local.scene_buckets : b.arn]}"
        return set(SCENE_BUCKETS)
    out = set()
    for item in resources:
        m = re.fullmatch(r"\$\{aws_s3_bucket\.(\w+)\.arn\}(/.*)?", item)
        out.add(m.group(1) + (m.group(2) or "") if m else item)
    return out


def grants(tf: Terraform, document: str) -> dict[str, set[str]]:
    """action -> resources, over the Allow statements of a policy document."""
    out: dict[str, set[str]] = {}
    for st in statements(tf, document):
        if st.get("effect", "Allow") != "Allow":
            continue
        for action in st["actions"]:
            out.setdefault(action, set()).update(resolve_resources(tf, st["resources"]))
    return out


def test_every_action_the_code_uses_is_granted(tf):
    ops = operations_in_code()
    assert {"put_object", "get_object", "list_objects_v2", "delete_objects"} <= set(ops), (
        "the operation scan found too little: did core/storage/ move?"
    )
    unknown = set(ops) - set(IAM_ACTIONS) - set(NOT_GRANTED)
    assert not unknown, (
        f"new AWS operations in the code: {sorted(unknown)}; map them to IAM actions in "
        "IAM_ACTIONS and grant them in infra/iam.tf"
    )
    granted = {**grants(tf, "origin_task")}
    for action, res in grants(tf, "worker_task").items():
        granted.setdefault(action, set()).update(res)
    for op in sorted(ops):
        for action in IAM_ACTIONS.get(op, ()):
            assert action in granted, f"{op} needs {action}, which no task role has"
            if action == "s3:ListBucket":
                assert granted[action] == set(SCENE_BUCKETS), action
            elif action.startswith("s3:"):
                assert all("/" in r for r in granted[action]), f"{action} on objects only"


def test_origin_reads_media_and_writes_only_uploads_and_api_assets(tf):
    origin = grants(tf, "origin_task")
    assert origin["s3:GetObject"] >= {"videos/*", "assets/*", "exports/*"}
    # the assets the API writes (origin/assets/service.py), by their key prefixes (core.layout)
    api_assets = {
        "assets/" + prefix for prefix in ("avatars/*", "topics/*", "scenes/*/reference/*")
    }
    assert layout.avatar_key("usr_0123456789abcdef").startswith("avatars/")
    assert layout.topic_icon_key("top_0123456789abcdef").startswith("topics/")
    assert layout.reference_prefix(SCENE) == f"scenes/{SCENE}/reference/"
    assert origin["s3:DeleteObject"] == {"internal/jobs/*"} | api_assets
    assert origin["s3:AbortMultipartUpload"] == {"internal/jobs/*"}
    # and the thumbnails it grabs at a moment (origin/playback/stills.py), never published media
    stills = {"videos/*/*/stills/*"}
    for action in ("s3:PutObject", "s3:PutObjectTagging"):
        assert origin[action] == {"internal/jobs/*"} | api_assets | stills, action
    assert not [a for a in origin if a.startswith("cloudfront:")]
    # upload (PutObject, then HeadObject) and cleanup (ListObjectsV2, DeleteObjects)
    for action in ("s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:DeleteObject"):
        assert any(r == "internal/jobs/*" for r in origin[action]), action


def test_only_the_workers_delete_media_and_invalidate(tf):
    worker = grants(tf, "worker_task")
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
        assert worker[action] >= {"videos/*", "assets/*", "exports/*", "internal/jobs/*"}
    assert worker["cloudfront:CreateInvalidation"] == {"${aws_cloudfront_distribution.cdn.arn}"}
    holders = [
        name
        for (rtype, name), body in tf.data.items()
        if rtype == "aws_iam_policy_document"
        and any(
            a.startswith("cloudfront:")
            for st in blocks(body.get("statement", []))
            for a in st.get("actions", [])
        )
    ]
    assert holders == ["worker_task"]


def test_nothing_broader_than_s3_star_on_the_scene_buckets(tf):
    for document in ("origin_task", "worker_task"):
        for action, resources in grants(tf, document).items():
            assert action == "s3:*" or "*" not in action, f"{document}: {action}"
            if action.startswith("s3:"):
                buckets = {r.split("/", 1)[0] for r in resources}
                assert buckets <= set(SCENE_BUCKETS), f"{document}: {action} on {resources}"
            else:
                assert action in OTHER_ACTIONS, f"{document}: unexpected {action}"
                assert "*" not in resources, f"{document}: {action} on every resource"
    # the task roles get exactly these documents
    for role in ("origin", "worker"):
        policy = tf.resource("aws_iam_role_policy", role)
        assert policy["role"] == f"${{aws_iam_role.{role}.id}}"
        assert policy["policy"] == f"${{data.aws_iam_policy_document.{role}_task.json}}"
    assert set(tf.of_type("aws_iam_role_policy")) == {"execution", "origin", "worker"}


# --------------------------------------------------------------------------- compute


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers which variables were looked up."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def environment_names(expression: str) -> set[str]:
    return set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", expression))


def test_task_environments_use_real_settings_and_secrets_manager(tf):
    env = RecordingEnv()
    Settings.from_env(env)
    known = env.asked | {"TMPDIR"}
    for name in ("origin", "worker", "migrate"):
        for kind in ("environment", "secrets"):
            value = tf.locals[f"{name}_{kind}"]
            text = value if isinstance(value, str) else json.dumps(value)
            names = environment_names(text) if isinstance(value, str) else set(value)
            if isinstance(value, str) and "local.bucket_environment" in value:
                names |= set(tf.locals["bucket_environment"])
            unknown = names - known
            assert not unknown, f"{name} {kind}: {sorted(unknown)} are not read by Settings"
            assert "DATABASE_URL" in names or kind == "environment", name
    # every secret comes from Secrets Manager (or the operator's secret for the RSA key)
    for name in ("origin", "worker", "migrate"):
        value = tf.locals[f"{name}_secrets"]
        if isinstance(value, str):
            sources = re.findall(r"\b[A-Z][A-Z0-9_]+\s*=\s*([\w.\[\]]+)", value)
        else:
            sources = [v.removeprefix("${").removesuffix("}") for v in value.values()]
        assert sources, name
        for source in sources:
            assert source.startswith("aws_secretsmanager_secret.") or source == (
                "var.cloudfront_private_key_secret_arn"
            ), f"{name}: secret from {source}"
    # secret-valued settings never travel as plain environment
    plain = environment_names(tf.locals["origin_environment"])
    assert not plain & {"DATABASE_URL", "ORIGIN_SECRET", "API_TOKENS", "HMAC_KEYS"}
    assert not plain & {"CLOUDFRONT_PRIVATE_KEY", "S3_SECRET_ACCESS_KEY"}


def test_one_task_definition_per_command_from_one_image(tf):
    from storyforge.cli import _parser

    defs = tf.of_type("aws_ecs_task_definition")
    assert set(defs) == {"origin", "worker", "migrate"}
    commands = tf.locals["service_commands"]
    assert set(commands) == set(defs)
    parser = _parser()
    for name, body in defs.items():
        assert body["requires_compatibilities"] == ["FARGATE"]
        definitions = body["container_definitions"]
        assert f"command = local.service_commands.{name}," in definitions, name
        assert "merge(local.container_base," in definitions, name
        argv = [tf.substitute_defaults(a) for a in commands[name]]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"task definition {name}: `storyforge {' '.join(argv)}` is not a command")
        assert args.command in ("serve", "worker", "migrate"), argv
    assert tf.locals["container_base"]["image"] == "${var.image}"
    assert commands["migrate"] == ["migrate"]
    services = tf.of_type("aws_ecs_service")
    assert set(services) == {"origin", "worker"}  # migrate is a one-off task
    [lb] = blocks(services["origin"]["load_balancer"])
    assert lb["container_port"] == "${local.port}"
    assert tf.locals["origin_environment"].count("PORT = tostring(local.port)") == 1
    assert "load_balancer" not in services["worker"]


def test_origin_scales_on_cpu_and_workers_on_the_queue_gauge(tf):

    from core import metrics
    from workers.runtime.main import handlers

    policy = tf.resource("aws_appautoscaling_policy", "origin_cpu")
    [conf] = blocks(policy["target_tracking_scaling_policy_configuration"])
    [metric] = blocks(conf["predefined_metric_specification"])
    assert metric["predefined_metric_type"] == "ECSServiceAverageCPUUtilization"

    # the alarm reads the gauge the origin's /metrics exposes, with its labels
    text = metrics.exposition(
        metrics.job_families({("transcode", "queued"): 3}, {}, ["transcode"], ["queued"])
    ).decode()
    assert re.search(r'^storyforge_jobs\{kind="transcode",status="queued"\} 3\.0$', text, re.M)
    alarm = tf.resource("aws_cloudwatch_metric_alarm", "jobs_queued")
    assert alarm["alarm_actions"] == ["${aws_appautoscaling_policy.worker_out.arn}"]
    [dynamic] = blocks(alarm["dynamic"])
    [query_metric] = blocks(dynamic["metric_query"]["content"][0]["metric"])
    assert query_metric["metric_name"] == "storyforge_jobs"
    assert query_metric["dimensions"] == {"kind": "${metric_query.value}", "status": "queued"}
    assert query_metric["namespace"] == "${local.metrics_namespace}"
    agent = tf.locals["cloudwatch_agent_config"]
    assert 'metric_selectors = ["^storyforge_jobs$"]' in agent
    assert 'label_matcher = "^queued$"' in agent and 'source_labels = ["status"]' in agent
    assert 'dimensions = [["kind", "status"]]' in agent
    assert "metric_namespace = local.metrics_namespace" in agent
    assert "localhost:${local.port}" in tf.locals["prometheus_scrape_config"]
    # scale out only on kinds a worker handles (others would stay queued forever)
    assert set(tf.locals["worker_job_kinds"]) == set(handlers(Settings(), None))


def test_migrate_runs_as_a_one_off_task_with_only_the_database(tf):
    migrate = tf.resource("aws_ecs_task_definition", "migrate")
    assert "task_role_arn" not in migrate  # no AWS credentials at all
    assert set(tf.locals["migrate_secrets"]) == {"DATABASE_URL"}
    assert "migrate_command" in {
        name for entry in tf.files["outputs.tf"]["output"] for name in entry
    }


def test_database_is_private_encrypted_postgres(tf):
    db = tf.resource("aws_db_instance", "main")
    assert db["engine"] == "postgres"
    assert int(tf.default("db_engine_version")) >= 15
    assert db["publicly_accessible"] is False
    assert db["storage_encrypted"] is True
    url = tf.locals["database_url"]
    assert url.startswith("postgresql://") and "sslmode=require" in url
    [force_ssl] = [
        p
        for p in blocks(tf.resource("aws_db_parameter_group", "main")["parameter"])
        if p["name"] == "rds.force_ssl"
    ]
    assert force_ssl["value"] == "1"


def test_infra_files_split_by_concern():
    names = {p.name for p in INFRA.glob("*.tf")}
    assert {
        "storage.tf",
        "cdn.tf",
        "compute.tf",
        "iam.tf",
        "variables.tf",
        "outputs.tf",
        "versions.tf",
    } <= names
    assert Path(ROOT / "docs" / "DEPLOY.md").is_file()
