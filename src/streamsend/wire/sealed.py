"""End-to-end encryption: sealed records, protocol version 3 (docs/security.md).

A sealed record is a version-2 record (``protocol.encode``: compression already applied)
whose every header but the few a router needs is moved, with the value, inside one
AES-256-GCM ciphertext:

- public headers, bound to the ciphertext as associated data: ``streamsend.version`` (3),
  ``streamsend.type``, ``streamsend.transfer``, ``streamsend.uploader``,
  ``streamsend.index``, ``streamsend.offset``, ``streamsend.partitioning``;
- everything else (path, sizes, SHA-256, mtime, mode, codec, a pack's manifest and files,
  an abort's reason) is in the ciphertext; the Kafka key is the uploader name alone.

Every file (or pack of small files) has a fresh random 32-byte file key, wrapped for every
recipient as an age file (``agekeys.wrap``). The record key is HKDF-SHA256 of the file key;
the transfer id is derived from the file key too, so a record that carries another file's
key (a chunk moved between files, or a record forged with a key of the writer's own for an
existing transfer) is rejected before decryption.

Value:     format (1 byte, 1) | wrapped length (u16) | wrapped key | nonce (12) | ciphertext
Plaintext: manifest length (u32) | manifest (JSON of the secret headers) | value length
           (u32) | value | zero padding
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from streamsend.errors import ProtocolError
from streamsend.wire import agekeys
from streamsend.wire.codecs import Codec
from streamsend.wire.protocol import (
    H_CODEC,
    H_INDEX,
    H_LENGTH,
    H_OFFSET,
    H_PARTITIONING,
    H_PATH,
    H_SIZE,
    H_TRANSFER,
    H_TYPE,
    H_UPLOADER,
    H_VERSION,
    SEALED_VERSION,
    T_CHUNK,
    T_PACK,
    EncodedHeaders,
    Message,
    NoKey,
    encode,
)

FILE_KEY_BYTES = 32
ENVELOPE_FORMAT = 1
NONCE_BYTES = 12
TAG_BYTES = 16
# Records without file bytes (end, abort) and state records are padded to a multiple of
# this, so a path's length does not show (paths are at most 4096 bytes).
METADATA_PAD = 4096
PUBLIC_HEADERS = frozenset(
    {H_VERSION, H_TYPE, H_TRANSFER, H_UPLOADER, H_INDEX, H_OFFSET, H_PARTITIONING}
)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_AAD_PREFIX = b"streamsend/3 record\n"
# Unwrapped file keys kept by a reader (one per file in flight is enough; a bound keeps
# a flood of records with distinct keys from growing memory).
KEY_CACHE = 4096


def derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` for one purpose (domain separation of every key)."""
    info = f"streamsend/3 {purpose}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def transfer_of(file_key: bytes) -> str:
    """The transfer id of the file sealed with ``file_key``."""
    return derive(file_key, "transfer id", 16).hex()


def _text(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else (value or b"")


def _aad(public: Mapping[str, bytes]) -> bytes:
    lines = (name.encode() + b"=" + public[name] + b"\n" for name in sorted(public))
    return _AAD_PREFIX + b"".join(lines)


def _pad(body: bytes, pad_to: int, multiple: int) -> bytes:
    target = max(pad_to, -(-len(body) // multiple) * multiple)
    return body + bytes(target - len(body)) if target > len(body) else body


class FileSeal:
    """The key of one file, or of one pack of small files, on the uploader's side."""

    def __init__(self, file_key: bytes, wrapped: bytes) -> None:
        self.transfer = transfer_of(file_key)
        self._aead = AESGCM(derive(file_key, "record key"))
        self._prefix = bytes([ENVELOPE_FORMAT]) + _U16.pack(len(wrapped)) + wrapped

    @property
    def overhead(self) -> int:
        """Bytes a sealed value has besides its plaintext."""
        return len(self._prefix) + NONCE_BYTES + TAG_BYTES

    def seal(
        self, headers: EncodedHeaders, value: bytes, pad_to: int = 0, multiple: int = 1
    ) -> tuple[EncodedHeaders, bytes]:
        """A version-2 record's headers and value as a sealed record's; the plaintext is
        padded with zeros to ``pad_to`` bytes, or to a multiple of ``multiple``."""
        public: dict[str, bytes] = {}
        secret: dict[str, str] = {}
        for name, raw in headers:
            if name in PUBLIC_HEADERS:
                public[name] = _text(raw)
            else:
                secret[name] = _text(raw).decode()
        public[H_VERSION] = str(SEALED_VERSION).encode()
        manifest = json.dumps(secret, separators=(",", ":"), ensure_ascii=False).encode()
        body = b"".join([_U32.pack(len(manifest)), manifest, _U32.pack(len(value)), value])
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, _pad(body, pad_to, multiple), _aad(public))
        return list(public.items()), b"".join([self._prefix, nonce, sealed])


class Sealer:
    """Seals an uploader's records for its recipients.

    With ``pad`` every record that carries file bytes is padded to ``record_bytes`` (the
    chunk size), so the topic shows a file's size only rounded up to the chunk size."""

    def __init__(self, recipients: list[agekeys.Recipient], pad: bool, record_bytes: int) -> None:
        if not recipients:
            raise ValueError("a Sealer needs at least one recipient")
        self._recipients = recipients
        self.pad = pad
        self.record_bytes = record_bytes
        # The wrapped key's length varies a little (age adds a random "grease" stanza):
        # one measured, plus slack, bounds it for sizing packs.
        self._overhead_bound = self.new_file().overhead + 512

    def new_file(self) -> FileSeal:
        key = os.urandom(FILE_KEY_BYTES)
        return FileSeal(key, agekeys.wrap(key, self._recipients))

    def encode(
        self, msg: Message, codec: Codec, seal: FileSeal
    ) -> tuple[bytes, EncodedHeaders, bytes]:
        """``msg`` as a sealed Kafka record (key, headers, value)."""
        _, headers, value = encode(msg, codec)
        kind = next((_text(v).decode() for n, v in headers if n == H_TYPE), "")
        if not self.pad:
            headers, value = seal.seal(headers, value)
        elif kind in (T_CHUNK, T_PACK):
            headers, value = seal.seal(headers, value, pad_to=self.record_bytes - seal.overhead)
        else:
            headers, value = seal.seal(headers, value, multiple=METADATA_PAD)
        return msg.uploader.encode(), headers, value

    def chunk_bytes(self, seal: FileSeal, path: str) -> int:
        """How many file bytes one chunk of ``path`` carries, so that its sealed record
        is at most ``record_bytes`` long."""
        bound = {H_PATH: path, H_SIZE: "9" * 16, H_CODEC: "snappy", H_LENGTH: "9" * 10}
        manifest = json.dumps(bound, separators=(",", ":"), ensure_ascii=False).encode()
        return max(1, self.record_bytes - seal.overhead - 2 * _U32.size - len(manifest))

    def pack_bytes(self) -> int:
        """The most a pack (a version-2 pack value) may hold before it is sealed."""
        return max(1, self.record_bytes - self._overhead_bound - 2 * _U32.size - 256)


class Opener:
    """Opens sealed records with a downloader's identities (protocol.Unsealer)."""

    def __init__(self, identities: list[agekeys.Identity]) -> None:
        self._identities = identities
        self._keys: OrderedDict[bytes, tuple[str, AESGCM] | None] = OrderedDict()

    @classmethod
    def for_identity_file(cls, file: str) -> Opener | None:
        """An opener with the identities of ``encryption.identity.file``; None when unset."""
        return cls(agekeys.identities(file)) if file else None

    def _key(self, wrapped: bytes) -> tuple[str, AESGCM] | None:
        if wrapped in self._keys:
            self._keys.move_to_end(wrapped)
            return self._keys[wrapped]
        file_key = agekeys.unwrap(wrapped, self._identities)
        entry = None
        if file_key is not None and len(file_key) == FILE_KEY_BYTES:
            entry = (transfer_of(file_key), AESGCM(derive(file_key, "record key")))
        self._keys[wrapped] = entry
        if len(self._keys) > KEY_CACHE:
            self._keys.popitem(last=False)
        return entry

    def unseal(self, h: dict[str, bytes], value: bytes) -> tuple[dict[str, bytes], bytes]:
        transfer = h[H_TRANSFER].decode(errors="replace") if H_TRANSFER in h else None
        if len(value) < 3 or value[0] != ENVELOPE_FORMAT:
            raise ProtocolError("a sealed record's envelope is not format 1")
        (length,) = _U16.unpack_from(value, 1)
        start = 3 + length
        if len(value) < start + NONCE_BYTES + TAG_BYTES:
            raise ProtocolError("a sealed record is too short for its envelope")
        key = self._key(bytes(value[3:start]))
        if key is None:
            raise NoKey("encrypted for none of this downloader's identities", transfer)
        key_transfer, aead = key
        if transfer is not None and transfer != key_transfer:
            raise ProtocolError(
                "a sealed record carries the key of another transfer (moved or forged)"
            )
        public = {name: raw for name, raw in h.items() if name in PUBLIC_HEADERS}
        extra = set(h) - PUBLIC_HEADERS
        if extra:
            raise ProtocolError(f"a sealed record has clear headers {sorted(extra)}")
        nonce = bytes(value[start : start + NONCE_BYTES])
        try:
            body = aead.decrypt(nonce, bytes(value[start + NONCE_BYTES :]), _aad(public))
        except InvalidTag:
            raise ProtocolError(
                "a sealed record failed authentication (altered, or moved from its file "
                "or position)"
            ) from None
        return _split(public, body)


def _split(public: dict[str, bytes], body: bytes) -> tuple[dict[str, bytes], bytes]:
    """The version-2 header map and value inside an authenticated plaintext."""
    try:
        (length,) = _U32.unpack_from(body, 0)
        manifest = json.loads(body[_U32.size : _U32.size + length])
        (size,) = _U32.unpack_from(body, _U32.size + length)
    except (struct.error, ValueError):
        raise ProtocolError("a sealed record's plaintext is malformed") from None
    start = 2 * _U32.size + length
    if not isinstance(manifest, dict) or start + size > len(body):
        raise ProtocolError("a sealed record's plaintext is malformed")
    merged = dict(public)
    for name, text in manifest.items():
        if not isinstance(text, str) or name in PUBLIC_HEADERS:
            raise ProtocolError(f"a sealed record's manifest has a bad entry {name!r}")
        merged[name] = text.encode()
    return merged, body[start : start + size]


class UploaderSecret:
    """An uploader's own secret (its key file): it names state records and chooses
    partitions without showing a path, and seals state values. Symmetric: only this
    uploader reads its state back."""

    def __init__(self, secret: bytes) -> None:
        self._names = derive(secret, "state names")
        self._partitions = derive(secret, "partitions")
        self._aead = AESGCM(derive(secret, "state values"))

    def name(self, path: str) -> str:
        return hmac.new(self._names, path.encode(), hashlib.sha256).hexdigest()[:32]

    def partition(self, uploader: str, path: str, partitions: int) -> int:
        mac = hmac.new(self._partitions, f"{uploader}/{path}".encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:4], "big") % partitions

    def seal(self, name: bytes, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        body = _pad(_U32.pack(len(value)) + value, 0, METADATA_PAD)
        return nonce + self._aead.encrypt(nonce, body, name)

    def open(self, name: bytes, sealed: bytes) -> bytes | None:
        """The value, or None when it is not ours (another key) or was altered."""
        try:
            body = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name)
            (size,) = _U32.unpack_from(body, 0)
        except (InvalidTag, ValueError, struct.error):
            return None
        return body[_U32.size : _U32.size + size]
