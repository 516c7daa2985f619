"""Settings.from_env: defaults, parsing, and one clear error per bad variable."""

from pathlib import Path

import pytest

from core.settings import ConfigError, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.storage == "local"
    assert s.buckets == (
        "storyforge-videos",
        "storyforge-assets",
        "storyforge-exports",
        "storyforge-internal",
    )
    assert s.signing == "none"
    assert s.api_tokens == ()
    assert s.fast_path is True
    assert (s.export_max_age, s.export_fetch_concurrency) == (86400.0, 4)


def test_export_settings():
    s = Settings.from_env({"EXPORT_MAX_AGE": "3600", "EXPORT_FETCH_CONCURRENCY": "8"})
    assert (s.export_max_age, s.export_fetch_concurrency) == (3600.0, 8)


def test_parsing():
    s = Settings.from_env(
        {
            "STORAGE": "S3",
            "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "STORAGE_ROOT": "/srv/x",
            "API_TOKENS": "a, b,,c",
            "CDN_BASE_URL": "https://cdn.example.com/",
            "PORT": "9000",
            "MAX_UPLOAD_BYTES": "1000",
            "FAST_PATH": "Off",
        }
    )
    assert s.fast_path is False
    assert s.storage == "s3"
    assert s.storage_root == Path("/srv/x")
    assert s.api_tokens == ("a", "b", "c")
    assert s.cdn_base_url == "https://cdn.example.com"
    assert s.port == 9000
    assert s.max_upload_bytes == 1000


@pytest.mark.parametrize(
    "env,name",
    [
        ({"STORAGE": "ftp"}, "STORAGE"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"VIDEOS_BUCKET": "Bad_Bucket"}, "VIDEOS_BUCKET"),
        ({"CDN_BASE_URL": "cdn.example.com"}, "CDN_BASE_URL"),
        ({"SIGNING": "rsa"}, "SIGNING"),
        ({"MAX_CLIP_SECONDS": "nan"}, "MAX_CLIP_SECONDS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"FAST_PATH": "yes"}, "FAST_PATH"),
        ({"EXPORT_MAX_AGE": "-1"}, "EXPORT_MAX_AGE"),
        ({"EXPORT_FETCH_CONCURRENCY": "0"}, "EXPORT_FETCH_CONCURRENCY"),
    ],
)
def test_errors_name_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(name + ":")


def test_frozen():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_scene_life_settings():
    d = Settings.from_env({})
    assert (d.cdn_distribution_id, d.cloudfront_endpoint_url) == ("", None)
    assert (d.cdn_invalidation_window, d.segment_removal_grace) == (5.0, 3600.0)
    s = Settings.from_env(
        {
            "CDN_DISTRIBUTION_ID": "E1ZAZAX2AMK9LZ",
            "CLOUDFRONT_ENDPOINT_URL": "http://127.0.0.1:5000/",
            "CDN_INVALIDATION_WINDOW": "0.5",
            "SEGMENT_REMOVAL_GRACE": "0",
        }
    )
    assert s.cdn_distribution_id == "E1ZAZAX2AMK9LZ"
    assert s.cloudfront_endpoint_url == "http://127.0.0.1:5000"
    assert (s.cdn_invalidation_window, s.segment_removal_grace) == (0.5, 0.0)
    # scene documents are keyed by the signed query on the CDN when signing is on;
    # workers (SIGNING=none) are told so
    assert not d.invalidate_query_variants
    assert Settings.from_env({"CDN_QUERY_VARIANTS": "true"}).invalidate_query_variants
    assert Settings.from_env(
        {"SIGNING": "hmac", "HMAC_KEYS": "k1:" + "s" * 16}
    ).invalidate_query_variants
    for env, name in [
        ({"CDN_DISTRIBUTION_ID": "e1/../x"}, "CDN_DISTRIBUTION_ID"),
        ({"CLOUDFRONT_ENDPOINT_URL": "127.0.0.1:5000"}, "CLOUDFRONT_ENDPOINT_URL"),
        ({"CDN_INVALIDATION_WINDOW": "-1"}, "CDN_INVALIDATION_WINDOW"),
        ({"SEGMENT_REMOVAL_GRACE": "soon"}, "SEGMENT_REMOVAL_GRACE"),
    ]:
        with pytest.raises(ConfigError, match=f"^{name}:"):
            Settings.from_env(env)


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_upload_and_webhook_settings():
    s = Settings.from_env({})
    assert (s.upload_expiry_seconds, s.upload_lock_seconds) == (86400, 60.0)
    assert (s.webhook_urls, s.webhook_allow_private, s.webhook_retry_seconds) == ((), False, 86400)
    s = Settings.from_env(
        {
            "UPLOAD_EXPIRY_SECONDS": "3600",
            "UPLOAD_LOCK_SECONDS": "15",
            "WEBHOOK_URLS": "https://a.example/hook, http://b.example:8080/x",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "WEBHOOK_TIMEOUT": "3",
            "WEBHOOK_RETRY_SECONDS": "600",
            "WEBHOOK_BACKOFF_BASE": "1",
        }
    )
    assert s.webhook_urls == ("https://a.example/hook", "http://b.example:8080/x")
    assert s.webhook_allow_private and s.webhook_timeout == 3.0
    assert (s.upload_expiry_seconds, s.upload_lock_seconds) == (3600, 15.0)
    assert SECRET not in repr(s)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WEBHOOK_URLS": "https://a.example/hook"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_URLS": "ftp://a.example/", "WEBHOOK_SECRET": SECRET}, "WEBHOOK_URLS"),
        ({"WEBHOOK_URLS": "https://u:p@a.example/", "WEBHOOK_SECRET": SECRET}, "WEBHOOK_URLS"),
        ({"WEBHOOK_SECRET": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_!!!"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "WEBHOOK_SECRET"),
        ({"UPLOAD_EXPIRY_SECONDS": "5"}, "UPLOAD_EXPIRY_SECONDS"),
        ({"WEBHOOK_ALLOW_PRIVATE": "maybe"}, "WEBHOOK_ALLOW_PRIVATE"),
    ],
)
def test_upload_and_webhook_refusals(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_loudness_and_thumbnail_settings():
    d = Settings.from_env({})
    assert (d.loudness_target, d.loudness_max_gain) == (-16.0, 20.0)
    assert (d.thumbnail_concurrency, d.thumbnail_cache_mb) == (2, 64)
    s = Settings.from_env(
        {
            "LOUDNESS_TARGET": "-23",
            "LOUDNESS_MAX_GAIN": "12.5",
            "THUMBNAIL_CONCURRENCY": "4",
            "THUMBNAIL_CACHE_MB": "0",
        }
    )
    assert (s.loudness_target, s.loudness_max_gain) == (-23.0, 12.5)
    assert (s.thumbnail_concurrency, s.thumbnail_cache_mb) == (4, 0)
    assert Settings.from_env({"LOUDNESS_TARGET": " OFF "}).loudness_target is None


@pytest.mark.parametrize(
    "env,name",
    [
        ({"LOUDNESS_TARGET": "loud"}, "LOUDNESS_TARGET"),
        ({"LOUDNESS_TARGET": "-80"}, "LOUDNESS_TARGET"),
        ({"LOUDNESS_TARGET": "0"}, "LOUDNESS_TARGET"),
        ({"LOUDNESS_MAX_GAIN": "-1"}, "LOUDNESS_MAX_GAIN"),
        ({"LOUDNESS_MAX_GAIN": "inf"}, "LOUDNESS_MAX_GAIN"),
        ({"THUMBNAIL_CONCURRENCY": "0"}, "THUMBNAIL_CONCURRENCY"),
        ({"THUMBNAIL_CACHE_MB": "-5"}, "THUMBNAIL_CACHE_MB"),
    ],
)
def test_loudness_and_thumbnail_errors_name_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(name + ":")


def test_cdn_and_cache_tag_settings():
    d = Settings.from_env({})
    assert (d.cdn_backend, d.cache_tag_header, d.cache_tag_separator) == (
        "none",
        "Surrogate-Key",
        " ",
    )
    assert Settings.from_env({"CDN_DISTRIBUTION_ID": "E2ABC"}).cdn_backend == "cloudfront"
    s = Settings.from_env(
        {
            "CDN": "varnish",
            "CDN_PURGE_URLS": "http://10.0.0.5:6081/, http://10.0.0.6:6081/",
            "CACHE_TAG_HEADER": "Cache-Tag",
            "CACHE_TAG_SEPARATOR": "comma",
        }
    )
    assert s.cdn_backend == "varnish"
    assert s.cdn_purge_urls == ("http://10.0.0.5:6081/", "http://10.0.0.6:6081/")
    assert (s.cache_tag_header, s.cache_tag_separator) == ("Cache-Tag", ",")
    assert Settings.from_env({"CACHE_TAG_HEADER": "off"}).cache_tag_header == ""
    # CDN=none invalidates nothing, a distribution id or not
    assert Settings.from_env({"CDN": "none", "CDN_DISTRIBUTION_ID": "E2ABC"}).cdn_backend == "none"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CDN": "fastly"}, "CDN"),
        ({"CDN": "varnish"}, "CDN_PURGE_URLS"),
        ({"CDN": "cloudfront"}, "CDN_DISTRIBUTION_ID"),
        ({"CDN": "varnish", "CDN_PURGE_URLS": "varnish:6081"}, "CDN_PURGE_URLS"),
        ({"CACHE_TAG_HEADER": "Surrogate Key"}, "CACHE_TAG_HEADER"),
        ({"CACHE_TAG_SEPARATOR": "tab"}, "CACHE_TAG_SEPARATOR"),
    ],
)
def test_cdn_settings_errors_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=f"^{name}:"):
        Settings.from_env(env)
