"""The CLI: --help is generated from the configuration model; flags reach resolve()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamsend import cli
from streamsend.config.loader import resolve
from streamsend.config.settings import DownloaderSettings, UploaderSettings, settings_fields
from streamsend.errors import ExitStatus, UsageError

ROLES = [("upload", UploaderSettings), ("download", DownloaderSettings)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("STREAMSEND_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("COLUMNS", "120")


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("command", "cls"), ROLES)
def test_help_lists_every_property(
    command: str, cls: type[UploaderSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    out = help_text(command, capsys)
    fields = settings_fields(cls)
    assert len(fields) > 3
    for f, s in fields:
        # A boolean's value is optional: --dry.run alone means yes.
        value = "[yes|no]" if str(f.type) == "bool" else "VALUE"
        assert f"--{s.name} {value}" in out, s.name
        if "." in s.name:
            assert f"--{s.name.replace('.', '-')} {value}" in out, s.name
        for choice in s.choices:
            assert choice in out


@pytest.mark.parametrize(("command", "cls"), ROLES)
def test_help_does_not_list_the_other_roles_properties(
    command: str, cls: type[UploaderSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    out = help_text(command, capsys)
    mine = {s.name for _, s in settings_fields(cls)}
    others = {s.name for _, c in ROLES for _, s in settings_fields(c)} - mine
    assert others
    for name in others:
        assert f"--{name} " not in out


def test_help_shows_required_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(help_text("upload", capsys).split())  # undo line wrapping
    assert "(default: required)" in out
    assert "(default: 5000)" in out  # file.minimum.age.ms
    assert "(default: the host name)" in out  # uploader.name
    assert "(default: no)" in out  # dry.run


def test_an_empty_default_is_not_called_required(capsys: pytest.CaptureFixture[str]) -> None:
    """Optional text properties default to empty (s3.bucket.name: S3 off); --help and
    the docs said "required" of them."""
    from streamsend.config.docs import render

    out = " ".join(help_text("download", capsys).split())
    for name in ("s3.bucket.name", "s3.prefix", "aws.access.key.id"):
        shown = out.split(f"--{name} VALUE, --", 1)[1].split("(default: ", 1)[1]
        assert shown.startswith("empty)"), (name, shown[:40])
    row = next(line for line in render().splitlines() if line.startswith("| `s3.bucket.name`"))
    assert "| *empty* |" in row, row


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "bogus", [["--bogus.key", "1"], ["--bogus.key=1"], ["--bogus-key", "1"]], ids=str
)
@pytest.mark.parametrize("command", ["upload", "download"])
def test_unknown_flag_is_a_one_line_config_error(
    command: str, bogus: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dir_flag = "--input.dir" if command == "upload" else "--output.dir"
    code, err = run([command, *bogus, dir_flag, str(tmp_path)], capsys)
    assert code == ExitStatus.CONFIG == 2
    assert err.count("\n") == 1
    assert err.startswith("streamsend: error:")
    assert "'bogus.key'" in err


def test_unknown_flag_after_known_ones_suggests_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["upload", "--input.dir", str(tmp_path), "--input.dri", "x"], capsys)
    assert code == 2
    assert "'input.dri'" in err
    assert "'input.dir'" in err


def test_secret_flag_value_is_not_printed_on_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["upload", "--sasl.password", "hunter2", "--input.dir", str(tmp_path)]
    code, err = run([*argv, "--dry.run", "perhaps"], capsys)
    assert code == 2
    assert "dry.run" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["upload", "stray"], "'stray'"), (["upload", "--linger.ms"], "needs a value")],
)
def test_malformed_command_line_is_a_usage_error(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(argv, capsys)
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1


def test_missing_required_property_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["upload", "--input.dir", str(tmp_path)], capsys)
    assert code == 2
    assert "bootstrap.servers is required" in err
    assert "STREAMSEND_BOOTSTRAP_SERVERS" in err


def test_passthrough_parses_both_spellings() -> None:
    found = cli._passthrough(
        ["--linger.ms", "5", "--acks=all", "--security-protocol", "SSL", "--client.id=a=b"]
    )
    assert found == {
        "linger.ms": "5",
        "acks": "all",
        "security.protocol": "SSL",
        "client.id": "a=b",
    }


@pytest.mark.parametrize("extra", [["positional"], ["--linger.ms"], ["--"]])
def test_passthrough_rejects_malformed(extra: list[str]) -> None:
    with pytest.raises(UsageError):
        cli._passthrough(extra)


def test_librdkafka_flags_reach_settings_kafka(tmp_path: Path) -> None:
    argv = [
        "upload",
        "--linger.ms",
        "5",
        "--input-dir",
        str(tmp_path),
        "--bootstrap.servers",
        "k:1",
        "--topic",
        "t",
        "--batch.num.messages=500",
        "--compression.type=lz4",
        "--dry-run",
        "yes",
    ]
    args, extra = cli.build_parser().parse_known_args(argv)
    flags = cli._flags(args, extra)
    assert flags["input.dir"] == str(tmp_path)
    assert flags["linger.ms"] == "5"
    s = resolve(UploaderSettings, flags=flags, environ={})
    assert s.kafka == {"linger.ms": "5", "batch.num.messages": "500"}
    # compression.type is Streamsend's own (a per-record codec), not passed through.
    assert s.compression_type == "lz4"
    assert s.input_dir == tmp_path
    assert s.dry_run is True


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["--dry.run"], True),
        (["--dry-run"], True),
        (["--dry.run", "true"], True),
        (["--dry.run", "yes"], True),
        (["--dry.run", "false"], False),
        (["--dry.run", "no"], False),
        (["--dry.run=false"], False),
        ([], False),
    ],
)
def test_a_boolean_flag_alone_means_yes(tmp_path: Path, given: list[str], expected: bool) -> None:
    """--dry.run alone, or followed by another flag, turns it on; a value still counts."""
    for where in ("start", "end"):
        rest = ["--input.dir", str(tmp_path), "--bootstrap.servers", "k:1", "--topic", "t"]
        argv = ["upload", *given, *rest] if where == "start" else ["upload", *rest, *given]
        args, extra = cli.build_parser().parse_known_args([*argv, "--linger.ms", "5"])
        s = resolve(UploaderSettings, flags=cli._flags(args, extra), environ={})
        assert (s.dry_run, s.kafka) == (expected, {"linger.ms": "5"}), (where, given)


def test_help_says_a_boolean_flag_may_stand_alone(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(help_text("upload", capsys).split())
    assert "--dry.run [yes|no], --dry-run [yes|no]" in out
    assert "--dry.run alone means yes." in out


def test_help_groups_every_property_in_a_named_section() -> None:
    from streamsend.config.settings import GROUPS, group_of

    titles = [title for title, _ in GROUPS]
    for cls in (UploaderSettings, DownloaderSettings):
        names = [s.name for _, s in settings_fields(cls)]
        assert [n for n in names if group_of(n) not in titles] == []
    subparsers = cli.build_parser()._subparsers
    assert subparsers is not None
    for command, section in (("upload", "Files to send"), ("download", "Output and staging")):
        sub = subparsers._group_actions[0].choices[command]  # type: ignore[index]
        sections = {g.title: {a.dest for a in g._group_actions} for g in sub._action_groups}
        assert "prop:bootstrap.servers" in sections["Kafka connection"]
        assert "prop:metrics.port" in sections["Logs and metrics"]
        assert any(d.startswith("prop:encryption.") for d in sections["End-to-end encryption"])
        assert sections[section]
