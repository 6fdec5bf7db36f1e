"""Certificates and credentials of a ``kafka up --secure`` cluster, made on the spot.

Everything lives in ``DIR/tls/``: a CA, the broker's PEM keystore (its private key and
certificate chain in one file, the form Kafka reads with ``ssl.keystore.type=PEM``, no
keytool), a client certificate for the mTLS listener, and ``credentials.json`` with the
SASL users' random passwords. Private keys and the credentials are mode 0600. A second
``up`` reuses them, so property files handed out earlier keep working.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamsend.errors import LocalKafkaError

TLS_DIR = "tls"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
BROKER_KEYSTORE = "broker-keystore.pem"  # key + certificate chain, for Kafka
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client-key.pem"
CREDENTIALS = "credentials.json"

# One user name for both mechanisms (they are separate user databases in Kafka), each
# with its own password.
SASL_USER = "streamsend"
CLIENT_CN = "streamsend-client"
VALID_DAYS = 3650
_PRIVATE = 0o600


@dataclass(frozen=True)
class Credentials:
    user: str
    plain_password: str
    scram_password: str


@dataclass(frozen=True)
class Material:
    """Paths of everything a secure node and its clients need."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def broker_keystore(self) -> Path:
        return self.directory / BROKER_KEYSTORE

    @property
    def client_cert(self) -> Path:
        return self.directory / CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY

    @property
    def credentials_file(self) -> Path:
        return self.directory / CREDENTIALS

    def credentials(self) -> Credentials:
        try:
            raw = json.loads(self.credentials_file.read_text(encoding="utf-8"))
            return Credentials(str(raw["user"]), str(raw["plain"]), str(raw["scram"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Not the exception's text: a JSON error quotes the file, secrets included.
            raise LocalKafkaError(
                f"cannot read the SASL credentials {self.credentials_file} "
                f"({type(exc).__name__}); `streamsend kafka down` and delete "
                f"{self.directory.parent} to start afresh"
            ) from None


def material(cluster_dir: Path) -> Material:
    return Material(cluster_dir / TLS_DIR)


def ensure(cluster_dir: Path) -> Material:
    """The cluster's certificates and credentials, created when missing, else reused."""
    found = material(cluster_dir)
    paths = (found.ca_cert, found.broker_keystore, found.client_cert, found.client_key)
    if found.credentials_file.is_file() and all(p.is_file() for p in paths):
        found.credentials()  # readable, or a clear error now rather than at client time
        return found
    found.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(found.directory, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamsend local Kafka CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    broker_key, broker_cert = _leaf(
        ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, now, server=True
    )
    client_key, client_cert = _leaf(
        ca_key, ca_cert, CLIENT_CN, ExtendedKeyUsageOID.CLIENT_AUTH, now, server=False
    )
    write_file(found.directory / CA_KEY, _key_pem(ca_key), private=True)
    write_file(found.ca_cert, _cert_pem(ca_cert))
    write_file(
        found.broker_keystore,
        _key_pem(broker_key) + _cert_pem(broker_cert) + _cert_pem(ca_cert),
        private=True,
    )
    write_file(found.client_key, _key_pem(client_key), private=True)
    write_file(found.client_cert, _cert_pem(client_cert) + _cert_pem(ca_cert))
    creds = {"user": SASL_USER, "plain": _password(), "scram": _password()}
    write_file(found.credentials_file, (json.dumps(creds, indent=2) + "\n").encode(), private=True)
    return found


def _password() -> str:
    # URL-safe characters only: nothing a properties file or JAAS string must escape.
    return secrets.token_urlsafe(24)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate a clock skewed back
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    usage: x509.ObjectIdentifier,
    now: datetime.datetime,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(name, ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if server:
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted: what Kafka's PEM keystore reads.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_file(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically; a private file is created 0600, never readable by others."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE if private else 0o644)
    with os.fdopen(fd, "wb") as fp:
        fp.write(data)
    os.chmod(tmp, _PRIVATE if private else 0o644)
    tmp.replace(path)
