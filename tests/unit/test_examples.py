"""examples/*.properties load through the real configuration loader, so they never rot.

Each file is read as ``streamsend upload|download --config FILE`` reads it (``resolve``
with the role's settings class, no environment, no flags): an unknown or misspelt
property, an invalid value or a missing required one fails here. Beyond loading, a
property that the loader would silently ignore for the file's role is refused, secrets
must be placeholders, and the local secure examples must match the client files that
``kafka up --secure`` writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import javaproperties
import pytest

from streamsend.config.kafka_properties import LIBRDKAFKA_PROPERTIES, applies_to
from streamsend.config.loader import is_secret, resolve
from streamsend.config.settings import (
    CommonSettings,
    DownloaderSettings,
    UploaderSettings,
    settings_fields,
)
from streamsend.localkafka import nodeconfig, tls
from streamsend.localkafka.layout import DEFAULT_PORT, Layout, NodeSpec
from streamsend.transport import msk_iam

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROLES: dict[str, type[CommonSettings]] = {
    "uploader": UploaderSettings,
    "downloader": DownloaderSettings,
}
FILES = sorted(EXAMPLES.glob("*.properties"))
PLACEHOLDER = re.compile(r"<[A-Za-z0-9_.-]+>")
# The directory the local secure examples point at (as README.md's "Try a secure setup").
SECURE_DIR = Path("/tmp/kafka-secure")


def role_of(path: Path) -> str:
    match = re.fullmatch(
        r"(?P<setup>[a-z0-9-]+)-(?P<role>uploader|downloader)\.properties", path.name
    )
    assert match, (
        f"{path.name}: name it <setup>-uploader.properties or <setup>-downloader.properties"
    )
    return match["role"]


def pairs(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as fp:
        loaded: dict[str, str] = javaproperties.load(fp)
    return loaded


def load(path: Path) -> CommonSettings:
    return resolve(ROLES[role_of(path)], file=path, environ={})


def example(name: str) -> Path:
    return EXAMPLES / name


def test_there_is_an_uploader_and_a_downloader_for_every_setup() -> None:
    setups: dict[str, set[str]] = {}
    for path in FILES:
        setup = path.name.rsplit("-", 1)[0]
        setups.setdefault(setup, set()).add(role_of(path))
    assert set(setups) >= {
        "local",
        "local-secure-scram",
        "local-secure-mtls",
        "confluent-cloud",
        "msk-iam",
        "encryption",
    }
    assert all(roles == {"uploader", "downloader"} for roles in setups.values()), setups


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_loads_through_the_configuration_loader(path: Path) -> None:
    settings = load(path)
    assert isinstance(settings, ROLES[role_of(path)])
    assert settings.topic and settings.bootstrap_servers


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_sets_nothing_its_role_ignores(path: Path) -> None:
    """The loader drops the other role's properties (one file may serve both), and a
    downloader hands producer-only librdkafka properties to no client: in an example
    for one role either would be a line that does nothing."""
    role = role_of(path)
    mine = {s.name for _, s in settings_fields(ROLES[role])}
    for key in pairs(path):
        if key in mine:
            continue
        assert key in LIBRDKAFKA_PROPERTIES, f"{path.name}: {key} is not for the {role}"
        if role == "downloader":
            assert applies_to(key, "consumer"), f"{path.name}: {key} is producer-only"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_secrets_in_examples_are_placeholders(path: Path) -> None:
    for key, value in pairs(path).items():
        if is_secret(key):
            assert PLACEHOLDER.fullmatch(value), f"{path.name}: {key} must be a <PLACEHOLDER>"


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in FILES:
        assert f"]({path.name})" in readme, path.name


def test_local_examples_use_the_default_local_broker() -> None:
    for path in FILES:
        if path.name.startswith(("local-uploader", "local-downloader", "encryption-")):
            assert load(path).bootstrap_servers == f"127.0.0.1:{DEFAULT_PORT}", path.name


@pytest.mark.parametrize(
    ("setup", "client_file"),
    [
        ("local-secure-scram", nodeconfig.CLIENT_SASL_SCRAM_FILE),
        ("local-secure-mtls", nodeconfig.CLIENT_MTLS_FILE),
    ],
)
def test_local_secure_examples_match_the_files_kafka_up_writes(
    setup: str, client_file: str
) -> None:
    """Same Kafka properties as ``kafka up --secure --dir /tmp/kafka-secure`` writes for
    that listener, with the same values except the placeholders (free port, password)."""
    node = NodeSpec(node_id=1, port=9092, controller_port=9093, sasl_ssl_port=9094, mtls_port=9095)
    layout = Layout("AAAAAAAAAAAAAAAAAAAAAA", "4.1.1", (node,), 1048588, 384, {}, secure=True)
    credentials = tls.Credentials(tls.SASL_USER, "plain-pw", "scram-pw")
    written = nodeconfig.client_properties(SECURE_DIR, layout, credentials)[client_file]
    for role in ROLES:
        path = example(f"{setup}-{role}.properties")
        ours = {k: v for k, v in pairs(path).items() if k in LIBRDKAFKA_PROPERTIES}
        assert set(ours) == set(written), path.name
        for key, value in ours.items():
            if PLACEHOLDER.search(value):
                continue
            assert value == written[key], f"{path.name}: {key}"


def test_msk_examples_ask_for_iam_with_a_region() -> None:
    for role in ROLES:
        settings = load(example(f"msk-iam-{role}.properties"))
        assert msk_iam.wanted(settings.kafka)
        assert settings.aws_region
        assert not settings.aws_secret_access_key  # the default credential chain


def test_confluent_cloud_examples_verify_the_broker_host() -> None:
    for role in ROLES:
        settings = load(example(f"confluent-cloud-{role}.properties"))
        assert settings.kafka["security.protocol"] == "SASL_SSL"
        assert settings.kafka["sasl.mechanism"] == "PLAIN"
        assert settings.kafka["ssl.endpoint.identification.algorithm"] == "https"


def test_encryption_examples_turn_encryption_on_at_both_ends() -> None:
    up = load(example("encryption-uploader.properties"))
    down = load(example("encryption-downloader.properties"))
    assert isinstance(up, UploaderSettings) and isinstance(down, DownloaderSettings)
    assert up.encryption_recipients or up.encryption_recipients_file
    assert down.encryption_identity_file
    assert up.topic == down.topic
