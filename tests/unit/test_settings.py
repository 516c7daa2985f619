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
