"""The S3 properties (issue 11): parsed and checked by the configuration model, with
the original Streamsend's names; object keys and part sizes (pure)."""

from __future__ import annotations

import pytest

from streamsend.config.loader import resolve
from streamsend.config.settings import DownloaderSettings, UploaderSettings
from streamsend.download.s3 import MAX_PARTS, object_key, part_size_for
from streamsend.errors import ConfigError

BASE = {"bootstrap.servers": "b:9092", "topic": "t", "output.dir": "/srv/out"}
MIB = 1024 * 1024


def settings(**flags: str) -> DownloaderSettings:
    return resolve(DownloaderSettings, environ={}, flags={**BASE, **flags})


def test_s3_properties_parse_with_the_original_names() -> None:
    s = settings(
        **{
            "s3.bucket.name": "data-lake",
            "s3.endpoint.url": "http://127.0.0.1:9000",
            "s3.prefix": "edge/",
            "s3.part.size.bytes": str(8 * MIB),
            "s3.keep.local.copy": "true",
            "aws.region": "eu-west-1",
        }
    )
    assert (s.s3_bucket_name, s.s3_endpoint_url, s.s3_prefix) == (
        "data-lake",
        "http://127.0.0.1:9000",
        "edge/",
    )
    assert (s.s3_part_size_bytes, s.s3_keep_local_copy, s.aws_region) == (
        8 * MIB,
        True,
        "eu-west-1",
    )


def test_s3_is_off_by_default_with_16_mib_parts() -> None:
    s = settings()
    assert s.s3_bucket_name == ""
    assert s.s3_part_size_bytes == 16 * MIB
    assert s.s3_keep_local_copy is False


def test_s3_properties_come_from_the_environment_too() -> None:
    s = resolve(
        DownloaderSettings,
        environ={"STREAMSEND_S3_BUCKET_NAME": "bucket1", "STREAMSEND_S3_PREFIX": "p/"},
        flags=BASE,
    )
    assert (s.s3_bucket_name, s.s3_prefix) == ("bucket1", "p/")


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("s3.bucket.name", "s3://bucket", "s3.bucket.name"),
        ("s3.bucket.name", "a/b", "s3.bucket.name"),
        ("s3.endpoint.url", "127.0.0.1:9000", "s3.endpoint.url"),
        ("s3.endpoint.url", "ftp://host", "s3.endpoint.url"),
        ("s3.prefix", "/abs/", "s3.prefix"),
        ("s3.prefix", "a//b/", "s3.prefix"),
        ("s3.part.size.bytes", str(MIB), "s3.part.size.bytes"),
        ("s3.keep.local.copy", "maybe", "s3.keep.local.copy"),
    ],
)
def test_bad_s3_values_are_one_line_config_errors(key: str, value: str, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**{key: value})
    message = str(info.value)
    assert names in message
    assert "\n" not in message


def test_the_uploader_ignores_the_downloaders_s3_properties() -> None:
    # One config file may serve both roles.
    flags = {
        "bootstrap.servers": "b:9092",
        "topic": "t",
        "input.dir": "/srv/in",
        "s3.bucket.name": "data-lake",
    }
    resolve(UploaderSettings, environ={}, flags=flags)


def test_half_a_key_pair_is_refused_before_anything_connects(tmp_path: object) -> None:
    from streamsend.download.s3 import make_client

    s = settings(**{"s3.bucket.name": "bucket1", "aws.access.key.id": "AKIAEXAMPLE"})
    with pytest.raises(ConfigError, match=r"aws\.secret\.access\.key is required"):
        make_client(s)


def test_object_keys_mirror_the_local_layout_under_the_prefix() -> None:
    assert object_key("", "shop-12", ("a", "b.csv")) == "shop-12/a/b.csv"
    assert object_key("lake/raw/", "up", ("x",)) == "lake/raw/up/x"
    # Written as is: without a trailing '/', the prefix is part of the first name.
    assert object_key("day1-", "up", ("x",)) == "day1-up/x"


def test_part_size_grows_only_past_ten_thousand_parts() -> None:
    assert part_size_for(10 * MIB, 16 * MIB) == 16 * MIB
    assert part_size_for(16 * MIB * MAX_PARTS, 16 * MIB) == 16 * MIB
    grown = part_size_for(16 * MIB * MAX_PARTS + 1, 16 * MIB)
    assert grown > 16 * MIB
    assert grown % MIB == 0
    assert grown * MAX_PARTS >= 16 * MIB * MAX_PARTS + 1
