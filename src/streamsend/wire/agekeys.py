"""age keys: reading recipients and identities, wrapping and unwrapping a file key.

Keys are the age format's X25519 keys (https://age-encryption.org/v1): a recipient is an
``age1...`` public key, an identity an ``AGE-SECRET-KEY-1...`` secret key, so keys made by
``age-keygen`` work here and ``streamsend keygen`` makes keys that work with ``age``. A
file key is wrapped for its recipients as a complete age file whose payload is the key:
the age header (one X25519 stanza per recipient, and its MAC) is exactly the "wrap for
every recipient" construction, and ``pyrage`` (bindings to the ``rage`` implementation)
does it, so no key-wrapping code of our own stands between the user and their key.

Nothing here ever puts a secret key's text in a message: errors name the file and line.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyrage  # type: ignore[import-untyped]  # compiled module, no type information

from streamsend.errors import ConfigError, UsageError

RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"

# pyrage's key objects, opaque to us.
Recipient = Any
Identity = Any


def _key_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, key) for every line that is not blank or a '#' comment."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def parse_recipient(text: str, where: str) -> Recipient:
    # The text is never quoted back: a secret key pasted by mistake must not be printed.
    if text.upper().startswith("AGE-SECRET-KEY-"):
        raise ConfigError(
            f"{where} is a secret key (AGE-SECRET-KEY-1...): give its public key (age1...) "
            f"here, and keep the secret key for the downloader's encryption.identity.file"
        )
    if not text.startswith(RECIPIENT_PREFIX):
        raise ConfigError(
            f"{where} is not an age X25519 recipient (age1...); SSH and plugin recipients "
            f"are not supported"
        )
    try:
        return pyrage.x25519.Recipient.from_str(text)
    except Exception:
        raise ConfigError(f"{where} is not a valid age recipient (a typo?)") from None


def recipients(listed: str, file: str) -> list[Recipient]:
    """The recipients of ``encryption.recipients`` (comma-separated) and
    ``encryption.recipients.file`` (one per line, as ``age -R`` reads), in that order."""
    items = [item.strip() for item in listed.split(",") if item.strip()]
    found = [
        parse_recipient(item, f"encryption.recipients item {n}") for n, item in enumerate(items, 1)
    ]
    if file:
        text = _read(file, "encryption.recipients.file")
        for number, line in _key_lines(text):
            found.append(
                parse_recipient(line, f"encryption.recipients.file {file!r} line {number}")
            )
        if not found:
            raise ConfigError(f"encryption.recipients.file {file!r} lists no recipient")
    return found


def identities(file: str) -> list[Identity]:
    """The identities of an age identity file (``age -i``): never echoes its content."""
    text = _read(file, "encryption.identity.file")
    found: list[Identity] = []
    for number, line in _key_lines(text):
        where = f"encryption.identity.file {file!r} line {number}"
        if not line.startswith(IDENTITY_PREFIX):
            raise ConfigError(f"{where} is not an age X25519 identity (AGE-SECRET-KEY-1...)")
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise ConfigError(f"{where} is not a valid age identity") from None
    if not found:
        raise ConfigError(f"encryption.identity.file {file!r} holds no identity")
    return found


def wrap(file_key: bytes, to: list[Recipient]) -> bytes:
    """An age file (binary) whose payload is ``file_key``, for every recipient."""
    return bytes(pyrage.encrypt(file_key, to))


def unwrap(wrapped: bytes, keys: list[Identity]) -> bytes | None:
    """The file key, or None when no identity opens it (or it is not an age file)."""
    if not keys:
        return None
    try:
        return bytes(pyrage.decrypt(wrapped, keys))
    except Exception:
        return None


def keygen(output: Path) -> str:
    """Write a new identity to ``output`` (mode 0600, never over an existing file), in
    ``age-keygen``'s format; return its recipient."""
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"{str(output)!r} exists: refusing to overwrite a key file") from None
    except OSError as exc:
        raise UsageError(f"cannot create {str(output)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return recipient


def _read(file: str, prop: str) -> str:
    try:
        return Path(file).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{prop} {file!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{prop} {file!r} is not a text file") from None
