"""Sealed records (protocol version 3) and age keys: the pure construction, no Kafka."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyrage
import pytest

from streamsend.errors import ConfigError, ProtocolError, UsageError
from streamsend.wire import agekeys
from streamsend.wire.codecs import NO_CODEC, Codec
from streamsend.wire.protocol import (
    H_INDEX,
    H_OFFSET,
    H_TRANSFER,
    H_VERSION,
    SEALED_VERSION,
    Abort,
    Chunk,
    End,
    NoKey,
    Pack,
    decode,
    encode,
    new_transfer_id,
)
from streamsend.wire.sealed import (
    METADATA_PAD,
    PUBLIC_HEADERS,
    Opener,
    Sealer,
    UploaderSecret,
    transfer_of,
)

RECORD = 64 * 1024
PATH = "secret dir/payroll-2026.csv"
DATA = b"name,salary\nalice,123\n" * 200


def keypair() -> tuple[object, object]:
    identity = pyrage.x25519.Identity.generate()
    return identity, identity.to_public()


@pytest.fixture
def keys() -> tuple[object, object]:
    return keypair()


def sealer(recipient: object, pad: bool = True) -> Sealer:
    return Sealer([recipient], pad, RECORD)


def raw(headers: list[tuple[str, str | bytes | None]]) -> bytes:
    return b"".join(
        n.encode() + (v.encode() if isinstance(v, str) else v or b"") for n, v in headers
    )


def sealed_chunk(s: Sealer, data: bytes = DATA, index: int = 0, offset: int = 0):
    seal = s.new_file()
    chunk = Chunk(seal.transfer, "up", PATH, index, offset, offset + len(data), data)
    return seal, s.encode(chunk, NO_CODEC, seal)


def with_header(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers]


def test_round_trip_of_every_record_type(keys) -> None:
    identity, recipient = keys
    s, opener = sealer(recipient), Opener([identity])
    seal = s.new_file()
    end = End(seal.transfer, "up", PATH, len(DATA), 1, "ab" * 32, -5, 0o640)
    messages = [
        Chunk(seal.transfer, "up", PATH, 0, 0, len(DATA), DATA),
        end,
        Abort(seal.transfer, "up", PATH, "the file changed"),
        Pack("up", ((End(new_transfer_id(), "up", "a/b.txt", 3, 1, "cd" * 32, 1, 0o600), b"abc"),)),
    ]
    for message in messages:
        key, headers, value = s.encode(message, NO_CODEC, seal)
        assert key == b"up"
        assert decode(headers, value, opener) == message


def test_nothing_secret_is_in_the_clear(keys) -> None:
    _, recipient = keys
    s = sealer(recipient, pad=False)
    seal = s.new_file()
    for message in (
        Chunk(seal.transfer, "up", PATH, 0, 0, len(DATA), DATA),
        End(seal.transfer, "up", PATH, len(DATA), 1, "ab" * 32, 1_700_000_000, 0o640),
    ):
        key, headers, value = s.encode(message, Codec("zstd"), seal)
        clear = key + raw(headers) + value
        for secret in (b"payroll", b"secret dir", b"alice", b"ab" * 32, b"1700000000"):
            assert secret not in clear
        assert {n for n, _ in headers} <= PUBLIC_HEADERS
        assert dict(headers)[H_VERSION] == str(SEALED_VERSION).encode()


def test_padding_hides_sizes(keys) -> None:
    _, recipient = keys
    s = sealer(recipient)
    lengths = {len(sealed_chunk(s, DATA[:n])[1][2]) for n in (1, 100, 4000)}
    assert lengths == {RECORD}
    seal = s.new_file()
    ends = {
        len(s.encode(End(seal.transfer, "up", p, 1, 1, "ab" * 32, 1, 0o600), NO_CODEC, seal)[2])
        for p in ("a", "x" * 2000)
    }
    assert len(ends) == 1 and ends.pop() >= METADATA_PAD


def test_a_full_chunk_fits_the_record(keys) -> None:
    _, recipient = keys
    s = sealer(recipient)
    seal = s.new_file()
    room = s.chunk_bytes(seal, PATH)
    chunk = Chunk(seal.transfer, "up", PATH, 0, 0, 1 << 40, os.urandom(room))
    assert len(s.encode(chunk, NO_CODEC, seal)[2]) == RECORD


def test_without_the_identity_the_record_says_no_key(keys) -> None:
    _, recipient = keys
    seal, (_, headers, value) = sealed_chunk(sealer(recipient))
    other, _ = keypair()
    for opener in (Opener([other]), None):
        with pytest.raises(NoKey) as caught:
            decode(headers, value, opener)
        assert caught.value.transfer == seal.transfer


def test_every_recipient_can_open(keys) -> None:
    first, r1 = keys
    second, r2 = keypair()
    _, (_, headers, value) = sealed_chunk(Sealer([r1, r2], True, RECORD))
    for identity in (first, second):
        assert decode(headers, value, Opener([identity])).data == DATA


def test_tampered_value_is_rejected(keys) -> None:
    identity, recipient = keys
    _, (_, headers, value) = sealed_chunk(sealer(recipient))
    for position in (len(value) - 1, len(value) - 20, len(value) // 2):
        bad = bytearray(value)
        bad[position] ^= 1
        with pytest.raises(ProtocolError, match="authentication"):
            decode(headers, bytes(bad), Opener([identity]))


@pytest.mark.parametrize("name,value", [(H_INDEX, b"1"), (H_OFFSET, b"4400")])
def test_moving_a_chunk_to_another_position_is_rejected(keys, name, value) -> None:
    identity, recipient = keys
    _, (_, headers, sealed) = sealed_chunk(sealer(recipient))
    with pytest.raises(ProtocolError, match="authentication"):
        decode(with_header(headers, name, value), sealed, Opener([identity]))


def test_moving_a_chunk_to_another_file_is_rejected(keys) -> None:
    identity, recipient = keys
    s = sealer(recipient)
    _, (_, headers, value) = sealed_chunk(s)
    other, _ = sealed_chunk(s)
    with pytest.raises(ProtocolError, match="another transfer"):
        decode(with_header(headers, H_TRANSFER, other.transfer.encode()), value, Opener([identity]))


def test_a_forged_key_cannot_join_an_existing_transfer(keys) -> None:
    """Anyone with the public key can seal a record. A forger who seals one under a key
    of their own, naming an existing transfer, is caught: the transfer id is derived from
    the key that sealed the record."""
    identity, recipient = keys
    s = sealer(recipient)
    victim, _ = sealed_chunk(s)
    forger = s.new_file()
    chunk = Chunk(victim.transfer, "up", PATH, 1, len(DATA), 2 * len(DATA), DATA)
    headers, value = forger.seal(encode(chunk, NO_CODEC)[1], DATA)
    with pytest.raises(ProtocolError, match="another transfer"):
        decode(headers, value, Opener([identity]))


def test_clear_headers_added_to_a_sealed_record_are_rejected(keys) -> None:
    identity, recipient = keys
    _, (_, headers, value) = sealed_chunk(sealer(recipient))
    with pytest.raises(ProtocolError, match="clear headers"):
        decode([*headers, ("streamsend.path", b"evil")], value, Opener([identity]))


def test_truncated_and_garbage_envelopes_are_protocol_errors(keys) -> None:
    identity, recipient = keys
    _, (_, headers, value) = sealed_chunk(sealer(recipient))
    for bad in (b"", b"\x01", b"\x02" + value[1:], value[:40], value[:-17]):
        with pytest.raises(ProtocolError):
            decode(headers, bad, Opener([identity]))


def test_uploader_secret_names_and_seals_state() -> None:
    secret = UploaderSecret(os.urandom(32))
    name = secret.name(PATH)
    assert len(name) == 32 and "payroll" not in name
    assert name == secret.name(PATH) != secret.name(PATH + "x")
    sealed = secret.seal(name.encode(), b'{"path":"x"}')
    assert len(sealed) % METADATA_PAD == 28 % METADATA_PAD
    assert secret.open(name.encode(), sealed) == b'{"path":"x"}'
    assert secret.open(b"other", sealed) is None
    assert UploaderSecret(os.urandom(32)).open(name.encode(), sealed) is None
    spread = {secret.partition("up", f"f{i}", 8) for i in range(200)}
    assert spread == set(range(8))


# -- age keys ------------------------------------------------------------------


def test_keygen_writes_an_age_identity_0600_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "id.txt"
    recipient = agekeys.keygen(out)
    assert recipient.startswith("age1")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert f"# public key: {recipient}" in text
    [identity] = agekeys.identities(str(out))
    assert str(identity.to_public()) == recipient
    with pytest.raises(UsageError, match="refusing to overwrite"):
        agekeys.keygen(out)
    assert out.read_text() == text


def test_identity_and_recipient_files_read_like_age(tmp_path: Path) -> None:
    one, two = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    ids = tmp_path / "ids"
    ids.write_text(f"# mine\n\n{one}\n  {two}  \n")
    assert [str(i) for i in agekeys.identities(str(ids))] == [str(one), str(two)]
    recipients = tmp_path / "recipients"
    recipients.write_text(f"# team\n{two.to_public()}\n\n")
    found = agekeys.recipients(f" {one.to_public()} ,", str(recipients))
    assert [str(r) for r in found] == [str(one.to_public()), str(two.to_public())]


def test_bad_keys_are_config_errors_that_never_echo_a_secret(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    with pytest.raises(ConfigError) as caught:
        agekeys.recipients(str(identity), "")
    assert str(identity) not in str(caught.value)
    assert "secret key" in str(caught.value)
    with pytest.raises(ConfigError, match="not an age X25519 recipient"):
        agekeys.recipients("ssh-ed25519 AAAA", "")
    with pytest.raises(ConfigError, match="not a valid age recipient"):
        agekeys.recipients("age1notakey", "")
    broken = tmp_path / "ids"
    broken.write_text(str(identity)[:-3] + "zzz\n")
    with pytest.raises(ConfigError) as caught:
        agekeys.identities(str(broken))
    assert str(identity)[:-3] not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        agekeys.identities(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no identity"):
        agekeys.identities(str(tmp_path / "empty"))


def test_manifest_is_json_of_secret_headers(keys) -> None:
    """The layout docs/security.md gives: decrypting by hand finds the manifest."""
    identity, recipient = keys
    seal, (_, headers, value) = sealed_chunk(sealer(recipient, pad=False))
    length = int.from_bytes(value[1:3], "big")
    file_key = pyrage.decrypt(value[3 : 3 + length], [identity])
    assert transfer_of(file_key) == seal.transfer
    opened = Opener([identity]).unseal(dict((n, bytes(v)) for n, v in headers), value)
    assert opened[0]["streamsend.path"] == PATH.encode()
