"""Configuration resolution: sources, precedence, parsing, validation, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsend.config.loader import describe, env_name, normalise_flag, read_file, resolve
from streamsend.config.settings import DownloaderSettings, UploaderSettings
from streamsend.errors import ConfigError, ExitStatus

REQUIRED_UP = {"bootstrap.servers": "k:9092", "topic": "t", "input.dir": "/data/in"}
REQUIRED_DOWN = {"bootstrap.servers": "k:9092", "topic": "t", "output.dir": "/data/out"}


def write(tmp_path: Path, text: str, name: str = "streamsend.properties") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def up(**kw: object) -> UploaderSettings:
    kw.setdefault("environ", {})
    return resolve(UploaderSettings, **kw)  # type: ignore[arg-type]


def config_error(cls: type = UploaderSettings, **kw: object) -> str:
    kw.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        resolve(cls, **kw)  # type: ignore[call-overload]
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_status == ExitStatus.CONFIG
    return message


# -- sources and precedence ----------------------------------------------------------


def test_defaults() -> None:
    s = up(flags=REQUIRED_UP)
    assert s.bootstrap_servers == "k:9092"
    assert s.topic == "t"
    assert s.input_dir == Path("/data/in")
    assert s.log_level == "INFO"
    assert s.input_file_pattern == ".*"
    assert s.file_minimum_age_ms == 5000
    assert s.file_maximum_age_ms == 0
    assert s.after_upload == "keep"
    assert s.dry_run is False
    assert s.upload_payload_percentage == 95
    assert s.uploader_name  # computed from the host name
    assert dict(s.kafka) == {}


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "bootstrap.servers=file:1\n"
        "topic=file-topic\n"
        "input.dir=/from/file\n"
        "log.level=ERROR\n"
        "scan.interval.ms=100\n"
        "linger.ms=1\n"
        "acks=1\n",
    )
    environ = {
        "STREAMSEND_TOPIC": "env-topic",
        "STREAMSEND_INPUT_DIR": "/from/env",
        "STREAMSEND_SCAN_INTERVAL_MS": "200",
        "STREAMSEND_LINGER_MS": "2",
    }
    flags = {"topic": "flag-topic", "linger.ms": "3"}
    s = resolve(UploaderSettings, file=file, environ=environ, flags=flags)
    assert s.topic == "flag-topic"  # flag > env > file
    assert s.input_dir == Path("/from/env")  # env > file
    assert s.scan_interval_ms == 200  # env > file
    assert s.bootstrap_servers == "file:1"  # file only
    assert s.log_level == "ERROR"  # file > default
    assert s.after_upload == "keep"  # default
    assert s.kafka == {"linger.ms": "3", "acks": "1"}


def test_properties_file_syntax(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "# a comment\n"
        "! another comment\n"
        "\n"
        "bootstrap.servers = a:1,\\\n"
        "    b:2\n"
        "topic: my-topic\n"
        "input.dir   /data/caf\\u00e9\n"
        "uploader.name=h\\\n"
        "  ost\n"
        "input.file.pattern=.*\\\\.csv\n"
        "  dry.run  =  yes  \n",
    )
    s = up(file=file)
    assert s.bootstrap_servers == "a:1,b:2"
    assert s.topic == "my-topic"
    assert s.input_dir == Path("/data/café")
    assert s.uploader_name == "host"
    assert s.input_file_pattern == r".*\.csv"
    assert s.dry_run is True


def test_read_file_records_the_source(tmp_path: Path) -> None:
    file = write(tmp_path, "topic=x\n")
    raw = read_file(file)["topic"]
    assert raw.value == "x"
    assert str(file) in raw.source


def test_missing_config_file(tmp_path: Path) -> None:
    message = config_error(file=tmp_path / "nope.properties", flags=REQUIRED_UP)
    assert "nope.properties" in message
    assert "does not exist" in message


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        ("--input-dir", "input.dir"),
        ("--input.dir", "input.dir"),
        ("input-dir", "input.dir"),
        ("--file-minimum-age-ms", "file.minimum.age.ms"),
        ("--log-level", "log.level"),
        ("--linger-ms", "linger.ms"),
        ("--linger.ms", "linger.ms"),
        ("--log_level", "log_level"),  # librdkafka's own name is kept as is
        ("--security-protocol", "security.protocol"),
    ],
)
def test_normalise_flag(flag: str, name: str) -> None:
    assert normalise_flag(flag) == name


def test_env_name() -> None:
    assert env_name("input.dir") == "STREAMSEND_INPUT_DIR"
    assert env_name("linger.ms") == "STREAMSEND_LINGER_MS"


def test_environment_variables() -> None:
    environ = {
        "STREAMSEND_BOOTSTRAP_SERVERS": "k:1",
        "STREAMSEND_TOPIC": "t",
        "STREAMSEND_INPUT_DIR": "/env/in",
        "STREAMSEND_LINGER_MS": "5",
        "STREAMSEND_SECURITY_PROTOCOL": "SASL_SSL",
        "PATH": "/usr/bin",
        "LINGER_MS": "99",
    }
    s = resolve(UploaderSettings, environ=environ)
    assert s.input_dir == Path("/env/in")
    assert s.kafka == {"linger.ms": "5", "security.protocol": "SASL_SSL"}


def test_unknown_environment_variable_suggests_the_closest() -> None:
    message = config_error(environ={"STREAMSEND_INPUT_DRI": "/x"}, flags=REQUIRED_UP)
    assert "STREAMSEND_INPUT_DRI" in message
    assert "STREAMSEND_INPUT_DIR" in message


def test_env_log_level_sets_streamsend_log_level() -> None:
    s = resolve(UploaderSettings, environ={"STREAMSEND_LOG_LEVEL": "DEBUG"}, flags=REQUIRED_UP)
    assert s.log_level == "DEBUG"
    assert "log_level" not in s.kafka


def test_librdkafka_property_in_file_and_flags_pass_through(tmp_path: Path) -> None:
    file = write(tmp_path, "security.protocol=SSL\nmessage.max.bytes=2000000\n")
    s = up(file=file, flags={**REQUIRED_UP, "linger.ms": "5"})
    assert s.kafka == {
        "security.protocol": "SSL",
        "message.max.bytes": "2000000",
        "linger.ms": "5",
    }


# -- unknown keys --------------------------------------------------------------------


def test_unknown_key_in_file_suggests_the_closest(tmp_path: Path) -> None:
    file = write(tmp_path, "input.dri=/data\n")
    message = config_error(file=file, flags=REQUIRED_UP)
    assert "'input.dri'" in message
    assert "did you mean 'input.dir'" in message
    assert str(file) in message


@pytest.mark.parametrize(
    ("key", "guess"),
    [("lingr.ms", "linger.ms"), ("topik", "topic"), ("after.uplaod", "after.upload")],
)
def test_unknown_flag_suggests_the_closest(key: str, guess: str) -> None:
    message = config_error(flags={**REQUIRED_UP, key: "1"})
    assert repr(key) in message
    assert repr(guess) in message


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    message = config_error(flags={**REQUIRED_UP, "zzzzqqqq": "1"})
    assert "'zzzzqqqq'" in message
    assert "did you mean" not in message


# -- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("scan.interval.ms", "abc"),
        ("scan.interval.ms", "1.5"),
        ("scan.interval.ms", ""),
        ("scan.interval.ms", "5"),  # below minimum 10
        ("upload.payload.percentage", "100"),  # above maximum 99
        ("upload.payload.percentage", "0"),
        ("file.minimum.age.ms", "-1"),
        ("dry.run", "maybe"),
        ("dry.run", ""),
        ("log.level", "verbose"),
        ("after.upload", "move"),
        ("input.file.pattern", "(unclosed"),
        ("input.file.pattern", ""),
        ("uploader.name", ".hidden"),
        ("uploader.name", "has space"),
        ("topic", ""),
        ("input.dir", ""),
    ],
)
def test_invalid_values_give_one_line_errors_naming_the_property(prop: str, value: str) -> None:
    message = config_error(flags={**REQUIRED_UP, prop: value})
    assert message.startswith(prop)
    assert f"--{prop}" in message  # names the source


def test_invalid_value_in_file_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "scan.interval.ms=fast\n")
    message = config_error(file=file, flags=REQUIRED_UP)
    assert "scan.interval.ms" in message
    assert "'fast'" in message
    assert str(file) in message


def test_invalid_value_in_env_names_the_variable() -> None:
    message = config_error(environ={"STREAMSEND_DRY_RUN": "sometimes"}, flags=REQUIRED_UP)
    assert "dry.run" in message
    assert "STREAMSEND_DRY_RUN" in message


@pytest.mark.parametrize(
    ("text", "expected"), [("yes", True), ("TRUE", True), ("on", True), ("1", True)]
)
def test_bool_true_spellings(text: str, expected: bool) -> None:
    assert up(flags={**REQUIRED_UP, "dry.run": text}).dry_run is expected


@pytest.mark.parametrize("text", ["no", "False", "OFF", "0"])
def test_bool_false_spellings(text: str) -> None:
    assert up(flags={**REQUIRED_UP, "dry.run": text}).dry_run is False


def test_values_are_normalised() -> None:
    s = up(
        flags={
            **REQUIRED_UP,
            "log.level": "debug",
            "after.upload": "DELETE",
            "generate.test.file.bytes": "1_000_000",
        }
    )
    assert s.log_level == "DEBUG"
    assert s.after_upload == "delete"
    assert s.generate_test_file_bytes == 1_000_000


def test_int_limits_are_inclusive() -> None:
    s = up(flags={**REQUIRED_UP, "upload.payload.percentage": "99", "scan.interval.ms": "10"})
    assert (s.upload_payload_percentage, s.scan_interval_ms) == (99, 10)


# -- cross checks --------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high"), [("5000", "5000"), ("5000", "4999"), ("1", "1")])
def test_maximum_age_must_exceed_minimum(low: str, high: str) -> None:
    message = config_error(
        flags={**REQUIRED_UP, "file.minimum.age.ms": low, "file.maximum.age.ms": high}
    )
    assert "file.maximum.age.ms" in message


@pytest.mark.parametrize(("low", "high"), [("5000", "0"), ("5000", "5001"), ("0", "1")])
def test_maximum_age_above_minimum_or_zero_is_fine(low: str, high: str) -> None:
    s = up(flags={**REQUIRED_UP, "file.minimum.age.ms": low, "file.maximum.age.ms": high})
    assert s.file_maximum_age_ms == int(high)


def test_downloader_refuses_auto_commit() -> None:
    message = config_error(
        DownloaderSettings, flags={**REQUIRED_DOWN, "enable.auto.commit": "true"}
    )
    assert "enable.auto.commit" in message


# -- roles ---------------------------------------------------------------------------


def test_downloader_properties_in_uploader_file_are_ignored(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "bootstrap.servers=k:1\ntopic=t\ninput.dir=/in\n"
        "output.dir=/out\nidle.exit.ms=not-a-number\ncommit.interval.ms=1\n",
    )
    s = up(file=file)
    assert s.input_dir == Path("/in")
    assert not hasattr(s, "output_dir")
    assert s.kafka == {}


def test_uploader_properties_in_downloader_file_are_ignored(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "bootstrap.servers=k:1\ntopic=t\noutput.dir=/out\n"
        "input.dir=/in\nafter.upload=not-a-choice\n",
    )
    with pytest.raises(ConfigError, match=r"after\.upload"):
        up(file=file)  # the uploader validates its own property...
    d = resolve(DownloaderSettings, file=file, environ={})
    assert d.output_dir == Path("/out")  # ...while the downloader ignores it
    assert not hasattr(d, "input_dir")
    assert d.kafka == {}


def test_other_roles_properties_from_env_and_flags_are_ignored() -> None:
    s = up(environ={"STREAMSEND_OUTPUT_DIR": "/out"}, flags={**REQUIRED_UP, "idle.exit.ms": "x"})
    assert s.kafka == {}


# -- required and secrets ------------------------------------------------------------


@pytest.mark.parametrize("missing", ["input.dir", "bootstrap.servers", "topic"])
def test_missing_required_property_names_env_var_and_flag(missing: str) -> None:
    flags = {k: v for k, v in REQUIRED_UP.items() if k != missing}
    message = config_error(flags=flags)
    assert message.startswith(f"{missing} is required")
    assert env_name(missing) in message
    assert f"--{missing}" in message


def test_missing_output_dir_for_downloader() -> None:
    flags = {k: v for k, v in REQUIRED_DOWN.items() if k != "output.dir"}
    assert "STREAMSEND_OUTPUT_DIR" in config_error(DownloaderSettings, flags=flags)


SECRETS = {
    "sasl.password": "hunter2-sasl",
    "ssl.key.password": "hunter2-key",
    "ssl.keystore.password": "hunter2-store",
    "sasl.oauthbearer.client.secret": "hunter2-oauth",
}


def test_secrets_are_hidden_in_describe(tmp_path: Path) -> None:
    file = write(tmp_path, "".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    s = up(file=file, flags={**REQUIRED_UP, "sasl.username": "alice"})
    assert {k: s.kafka[k] for k in SECRETS} == SECRETS  # passed through intact
    shown = describe(s)
    for key, value in SECRETS.items():
        assert shown[key] == "(hidden)"
        assert value not in str(shown)
    assert shown["sasl.username"] == "alice"
    assert shown["input.dir"] == "/data/in"
    assert shown["topic"] == "t"


def test_private_key_passphrase_is_hidden() -> None:
    prop = "sasl.oauthbearer.assertion.private.key.passphrase"
    s = up(flags={**REQUIRED_UP, prop: "hunter2"})
    assert describe(s)[prop] == "(hidden)"


def test_secrets_never_appear_in_error_messages(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "".join(f"{k}={v}\n" for k, v in SECRETS.items()) + "scan.interval.ms=oops\n",
    )
    message = config_error(file=file, flags=REQUIRED_UP)
    assert "scan.interval.ms" in message
    for value in SECRETS.values():
        assert value not in message
    # A misspelt secret key is named, its value is not.
    message = config_error(flags={**REQUIRED_UP, "sasl.passwrd": "hunter2-typo"})
    assert "sasl.passwrd" in message
    assert "'sasl.password'" in message
    assert "hunter2-typo" not in message
    message = config_error(environ={"STREAMSEND_SASL_PASSWRD": "hunter2-env"}, flags=REQUIRED_UP)
    assert "hunter2-env" not in message


@pytest.mark.parametrize("key", ["finished.file.retention.mins"])
def test_original_properties_not_supported_yet_are_named_as_such(key: str) -> None:
    from streamsend.config.loader import resolve
    from streamsend.config.settings import DownloaderSettings
    from streamsend.errors import ConfigError

    flags = {"bootstrap.servers": "b:9092", "topic": "t", "output.dir": "/srv/out", key: "x"}
    with pytest.raises(ConfigError, match="does not support yet") as info:
        resolve(DownloaderSettings, environ={}, flags=flags)
    assert "\n" not in str(info.value)
