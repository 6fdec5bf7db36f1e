"""The uploader's end-to-end encryption: its recipients, its own key file, and how one
record is encoded (sealed or not). The construction is in ``wire/sealed.py``."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

import platformdirs

from streamsend.config.settings import UploaderSettings
from streamsend.errors import EnvironmentProblem
from streamsend.wire import agekeys
from streamsend.wire.codecs import Codec
from streamsend.wire.protocol import EncodedHeaders, Message, encode, file_partition
from streamsend.wire.sealed import FileSeal, Sealer, UploaderSecret

log = logging.getLogger(__name__)

KEY_FILE_NAME = ".streamsend-uploader.key"
_KEY_HEADER = "# streamsend uploader key: keep it with this uploader, never share it\n"


def local_file(input_dir: Path, name: str, fallback: Path) -> Path:
    """``name`` in input.dir, where every uploader of it sees it; in ``fallback`` (a
    per-user directory) under a name derived from input.dir when input.dir is read-only."""
    if os.access(input_dir, os.W_OK):
        return input_dir / name
    digest = hashlib.sha256(str(input_dir).encode()).hexdigest()[:24]
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback / f"uploader-{digest}{Path(name).suffix}"


def key_file_path(settings: UploaderSettings, input_dir: Path) -> Path:
    if settings.encryption_uploader_key_file:
        return Path(settings.encryption_uploader_key_file).expanduser()
    keys = Path(platformdirs.user_data_dir("streamsend")) / "uploader-keys"
    return local_file(input_dir, KEY_FILE_NAME, keys)


def load_or_create_secret(path: Path) -> bytes:
    """The uploader's 32-byte secret from ``path``, created (mode 0600) when missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_secret(path)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create the uploader key file {str(path)!r}: {exc.strerror} "
            f"(set encryption.uploader.key.file)"
        ) from None
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(_KEY_HEADER + secret.hex() + "\n")
        out.flush()
        os.fsync(out.fileno())
    log.info("created the uploader key file %s", path)
    return secret


def _read_secret(path: Path) -> bytes:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
        text = next(line.strip() for line in lines if line.strip() and line[0] != "#")
        secret = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, StopIteration, ValueError):
        secret = b""
    if len(secret) != 32:
        raise EnvironmentProblem(
            f"the uploader key file {str(path)!r} is unreadable or damaged (expected 64 hex "
            f"digits); move it away to start with a new key (every file is then sent again)"
        )
    return secret


class RecordEncoder:
    """Encodes the uploader's records: plain version 2, or sealed for the recipients."""

    def __init__(self, sealer: Sealer | None, secret: UploaderSecret | None) -> None:
        self.sealer = sealer
        self.secret = secret

    @classmethod
    def plain(cls) -> RecordEncoder:
        return cls(None, None)

    @classmethod
    def sealing(
        cls,
        recipients: list[agekeys.Recipient],
        settings: UploaderSettings,
        secret: UploaderSecret,
        record_bytes: int,
    ) -> RecordEncoder:
        pad = settings.encryption_padding == "chunk"
        log.info(
            "end-to-end encryption on: %d recipient(s), padding %s",
            len(recipients),
            settings.encryption_padding,
        )
        return cls(Sealer(recipients, pad, record_bytes), secret)

    def new_file(self) -> FileSeal | None:
        return self.sealer.new_file() if self.sealer else None

    def encode(
        self, msg: Message, codec: Codec, seal: FileSeal | None
    ) -> tuple[bytes, EncodedHeaders, bytes]:
        if self.sealer is None:
            return encode(msg, codec)
        return self.sealer.encode(msg, codec, seal or self.sealer.new_file())

    def partition(self, uploader: str, path: str, partitions: int) -> int:
        """The partition of every record of a file: keyed by the uploader's secret when
        encrypting, so that it does not tell a reader which path it is."""
        if self.secret is None:
            return file_partition(uploader, path, partitions)
        return self.secret.partition(uploader, path, partitions)

    def chunk_bytes(self, seal: FileSeal | None, path: str, chunk_bytes: int) -> int:
        if self.sealer is None or seal is None:
            return chunk_bytes
        return self.sealer.chunk_bytes(seal, path)

    def pack_bytes(self, chunk_bytes: int) -> int:
        return chunk_bytes if self.sealer is None else self.sealer.pack_bytes()


def recipients_of(settings: UploaderSettings) -> list[agekeys.Recipient]:
    return agekeys.recipients(settings.encryption_recipients, settings.encryption_recipients_file)
