"""Resolve settings from their sources: flag > environment > file > default.

Sources are read into ``{property: Raw}`` maps, merged by precedence, then converted
and validated against the configuration model in ``settings.py``. Keys that are not
Streamsend properties are passed through to librdkafka when librdkafka knows them;
anything else is an error naming the key and the closest valid name.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

import javaproperties

from streamsend.config.kafka_properties import LIBRDKAFKA_PROPERTIES, is_librdkafka_property
from streamsend.config.settings import (
    CommonSettings,
    DownloaderSettings,
    Setting,
    UploaderSettings,
    all_property_names,
    settings_fields,
)
from streamsend.errors import ConfigError

ENV_PREFIX = "STREAMSEND_"
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}

S = TypeVar("S", bound=CommonSettings)

# Documented by the original Streamsend, not implemented here yet. Named, so a user who
# brings such a config file learns exactly what is missing rather than "unknown".
NOT_YET_SUPPORTED = {
    "finished.file.retention.mins": "deleting .FINISHED files later (after.upload=delete "
    "deletes a file once every chunk is acknowledged)",
}


@dataclass(frozen=True)
class Raw:
    """A value as written by the user, with where it came from (for error messages)."""

    value: str
    source: str


def env_name(prop: str) -> str:
    return ENV_PREFIX + prop.replace(".", "_").replace("-", "_").upper()


def is_secret(prop: str) -> bool:
    """Properties whose values must never be printed."""
    lowered = prop.lower()
    words = (
        "password",
        "passphrase",
        "secret",
        "jaas",
        "token",
        "key.pem",
        "private.key",
        "oauthbearer.config",  # librdkafka's unsecured-JWT settings, redacted by it too
    )
    return any(word in lowered for word in words)


def read_file(path: Path) -> dict[str, Raw]:
    try:
        with path.open(encoding="utf-8") as fp:
            pairs = javaproperties.load(fp)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except javaproperties.InvalidUEscapeError:
        # Not the exception's text: it quotes the escape, which may sit inside a secret.
        raise ConfigError(f"config file {str(path)!r} has an invalid \\uXXXX escape") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc
    return {key.strip(): Raw(value.strip(), f"config file {path}") for key, value in pairs.items()}


def _known_names() -> list[str]:
    return sorted(all_property_names() | set(LIBRDKAFKA_PROPERTIES))


def read_env(environ: Mapping[str, str]) -> dict[str, Raw]:
    """``STREAMSEND_INPUT_DIR=/x`` -> ``input.dir``. Underscores are ambiguous, so the
    variable is matched against every known property name."""
    # Streamsend's own names win a clash (log.level vs librdkafka's log_level).
    by_env = {env_name(name): name for name in LIBRDKAFKA_PROPERTIES}
    by_env.update({env_name(name): name for name in all_property_names()})
    found: dict[str, Raw] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        prop = by_env.get(var)
        if prop is None:
            guess = difflib.get_close_matches(var, list(by_env), n=1)
            hint = f"; did you mean {guess[0]}?" if guess else ""
            raise ConfigError(f"unknown environment variable {var}{hint}")
        found[prop] = Raw(value, f"environment variable {var}")
    return found


def normalise_flag(flag: str) -> str:
    """``--input-dir`` and ``--input.dir`` both name ``input.dir``."""
    name = flag.lstrip("-")
    if name in all_property_names() or is_librdkafka_property(name):
        return name
    return name.replace("-", ".")


def _convert(setting: Setting, type_name: str, raw: Raw) -> Any:
    shown = "(hidden)" if setting.secret else repr(raw.value)
    where = f"(from {raw.source})"
    text = raw.value
    if type_name == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{setting.name}: {shown} is not yes/no/true/false {where}")
    if type_name == "int":
        try:
            number = int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{setting.name}: {shown} is not a whole number {where}") from None
        if setting.minimum is not None and number < setting.minimum:
            raise ConfigError(
                f"{setting.name}: {number} is below the minimum {setting.minimum} {where}"
            )
        if setting.maximum is not None and number > setting.maximum:
            raise ConfigError(
                f"{setting.name}: {number} is above the maximum {setting.maximum} {where}"
            )
        return number
    if type_name == "Path":
        if not text:
            raise ConfigError(f"{setting.name}: must not be empty {where}")
        return Path(text).expanduser()
    if setting.choices:
        match = next((c for c in setting.choices if c.lower() == text.lower()), None)
        if match is None:
            raise ConfigError(
                f"{setting.name}: {shown} is not one of {', '.join(setting.choices)} {where}"
            )
        return match
    if not text:
        raise ConfigError(f"{setting.name}: must not be empty {where}")
    return text


def _other_role_names(cls: type[CommonSettings]) -> set[str]:
    mine = {s.name for _, s in settings_fields(cls)}
    return all_property_names() - mine


def resolve(
    cls: type[S],
    *,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> S:
    """Build settings of ``cls`` from a config file, environment and flags."""
    merged: dict[str, Raw] = {}
    if file is not None:
        merged.update(read_file(file))
    merged.update(read_env(os.environ if environ is None else environ))
    for key, value in (flags or {}).items():
        merged[key] = Raw(value, f"flag --{key}")

    fields = settings_fields(cls)
    mine = {s.name: (f, s) for f, s in fields}
    ignored = _other_role_names(cls)
    values: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    for key, raw in merged.items():
        if key in mine:
            f, s = mine[key]
            values[f.name] = _convert(s, str(f.type), raw)
        elif key in ignored:
            continue  # a shared config file may carry the other role's properties
        elif is_librdkafka_property(key):
            kafka[key] = raw.value
        elif key in NOT_YET_SUPPORTED:
            raise ConfigError(
                f"{key} (from {raw.source}) is a property of the original Streamsend that "
                f"this version does not support yet: {NOT_YET_SUPPORTED[key]}"
            )
        else:
            guess = difflib.get_close_matches(key, _known_names(), n=1, cutoff=0.6)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise ConfigError(f"unknown property {key!r} (from {raw.source}){hint}")

    for f, s in fields:
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(
                f"{s.name} is required: set it in the config file, as --{s.name} or as "
                f"{env_name(s.name)}"
            )
    for f, s in fields:
        if s.check is not None and f.name in values:
            problem = s.check(values[f.name])
            if problem:
                raise ConfigError(f"{s.name}: {problem} (from {merged[s.name].source})")
    settings = cls(kafka=kafka, **values)
    _cross_checks(settings)
    return settings


def _cross_checks(settings: CommonSettings) -> None:
    if isinstance(settings, UploaderSettings):
        low, high = settings.file_minimum_age_ms, settings.file_maximum_age_ms
        if high and high <= low:
            raise ConfigError(
                f"file.maximum.age.ms ({high}) must exceed file.minimum.age.ms ({low}), "
                "or be 0 to turn the limit off"
            )
    if (
        isinstance(settings, DownloaderSettings)
        and settings.kafka.get("enable.auto.commit", "").lower() == "true"
    ):
        raise ConfigError(
            "enable.auto.commit=true is not supported: the downloader commits offsets itself, "
            "only once the data is durably on disk"
        )


def describe(settings: CommonSettings) -> dict[str, str]:
    """The effective configuration with secrets hidden, for the start-up log."""
    shown: dict[str, str] = {}
    for f, s in settings_fields(type(settings)):
        value = getattr(settings, f.name)
        shown[s.name] = "(hidden)" if s.secret else str(value)
    for key, value in settings.kafka.items():
        shown[key] = "(hidden)" if is_secret(key) else value
    return shown
