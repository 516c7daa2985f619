"""Settings.from_env: defaults, parsing, and one clear error per bad variable."""

from pathlib import Path

import pytest

from origin.settings import ConfigError, Settings


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
