"""The S3 destination (``s3.bucket.name``): each verified file becomes one object, whole
or not at all, named ``{s3.prefix}{uploader}/{path}``.

A file up to ``s3.part.size.bytes`` is one PutObject whose ``ChecksumSHA256`` is the
SHA-256 the uploader sent (the file's own hash, verified in staging): S3 refuses the
object unless the bytes it received have that hash. A larger file is a multipart upload
in parts of that size, read from the staged file one at a time (memory stays flat for
any size), each with its own ``ChecksumSHA256`` that S3 checks; the whole file's SHA-256
is computed again as the parts are read and the upload is completed only if it still
matches. A multipart upload is invisible until completed, so no reader ever sees part of
a file.

Object metadata: ``sha256`` (hex), ``mtime`` (seconds since the epoch, with nanoseconds),
``mode`` (octal permission bits), ``uploader`` and ``transfer`` (the transfer id).

Failures, and how a file still arrives once and whole (see destination.py for the rule
the ledger applies):

- an outage (no connection, 5xx, throttling, expired credentials) raises
  DestinationUnavailable: the round is retried with backoff; the parts this process
  already sent are kept (in memory) and the upload goes on where it stopped, unless the
  store lost it (NoSuchUpload, or FRESH_UPLOAD_AFTER server errors in a row: a store
  restarted empty), and then the file is sent in a fresh upload;
- a crash mid-upload: the next run hands the file over again; the incomplete uploads
  left under its key are aborted and it is sent afresh;
- a crash after the object was completed, before the staged copy was deleted: the next
  run finds the object (HEAD: same transfer, same SHA-256) and does not send it again.

One downloader per bucket and prefix: aborting the incomplete uploads of a key assumes
nobody else is writing it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import mimetypes
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamsend.awscreds import given_credentials, quiet_botocore, redact, secrets_of
from streamsend.config.settings import DownloaderSettings
from streamsend.download.destination import DestinationUnavailable, KeepAlive
from streamsend.download.reassembly import Transfer
from streamsend.download.staging import Faults, StagingArea, VerificationFailed
from streamsend.errors import AccessRefused, EnvironmentProblem, StreamsendError
from streamsend.wire.paths import UnsafePath

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_KEY_BYTES = 1024  # S3's limit on a key
DEFAULT_REGION = "us-east-1"
PROBE_NAME = ".streamsend-probe-"
# A multipart upload that gets this many server errors (5xx) in a row is given up and
# the file sent in a fresh one: the store may have lost it without saying NoSuchUpload.
FRESH_UPLOAD_AFTER = 3
_MIB = 1024 * 1024
# Error codes of a request refused for its credentials or rights.
_ACCESS_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "403",
}
# Error codes of a bucket that is in another region than the client signs for.
_REGION_CODES = {
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "PermanentRedirect",
    "301",
}
# Error codes refusing the object's key: that file can never be stored under it.
_KEY_CODES = {"KeyTooLongError", "InvalidObjectName"}


def _no_faults(_step: str) -> None:
    return None


def object_key(prefix: str, uploader: str, parts: tuple[str, ...]) -> str:
    return prefix + "/".join((uploader, *parts))


def part_size_for(size: int, configured: int) -> int:
    """``configured``, grown (to whole MiB) for a file that would need more than
    MAX_PARTS parts."""
    if size <= configured * MAX_PARTS:
        return configured
    return math.ceil(size / MAX_PARTS / _MIB) * _MIB


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _read(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes of the staged file at ``offset``."""
    data = bytearray()
    while len(data) < length:
        block = os.pread(fd, length - len(data), offset + len(data))
        if not block:
            raise VerificationFailed("the staged file is shorter than it was when verified")
        data += block
    return bytes(data)


def make_client(settings: DownloaderSettings) -> S3Client:
    """A boto3 S3 client for the aws.* and s3.* properties. Its own retries are few and
    quick: an outage is retried by the downloader, which keeps its Kafka session alive
    meanwhile."""
    import boto3
    from botocore.config import Config

    quiet_botocore()
    given = given_credentials(settings)
    session = boto3.session.Session(
        aws_access_key_id=given.access_key_id if given else None,
        aws_secret_access_key=given.secret_access_key if given else None,
        aws_session_token=given.session_token if given else None,
        region_name=settings.aws_region or DEFAULT_REGION,
    )
    endpoint = settings.s3_endpoint_url or None
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible stores are usually reached by path (no wildcard DNS for buckets).
        s3={"addressing_style": "path" if endpoint else "auto"},
        user_agent_extra="streamsend",
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


@dataclass
class _Upload:
    """A multipart upload this process started: the parts S3 confirmed so far."""

    upload_id: str
    part_size: int
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: int = 0  # server errors in a row on it


class S3Destination:
    def __init__(
        self,
        settings: DownloaderSettings,
        staging: StagingArea,
        faults: Faults = _no_faults,
        client: S3Client | None = None,
    ) -> None:
        self.staging = staging
        self.faults = faults
        self.bucket = settings.s3_bucket_name
        self.prefix = settings.s3_prefix
        self.part_size = settings.s3_part_size_bytes
        self.keep_local = settings.s3_keep_local_copy
        self.region = settings.aws_region or DEFAULT_REGION
        self.endpoint = settings.s3_endpoint_url
        self._secrets = secrets_of(settings)
        self.client = client if client is not None else make_client(settings)
        self._uploads: dict[str, _Upload] = {}  # transfer -> its upload under way
        self._warned_listing = False

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else f" in {self.region}"
        return f"s3://{self.bucket}/{self.prefix}{where}"

    # -- start-up ------------------------------------------------------------------

    def check(self) -> None:
        """Write and delete a probe object, or raise one line saying what is wrong."""
        key = f"{self.prefix}{PROBE_NAME}{socket.gethostname()}-{os.getpid()}"
        try:
            put = self.client.put_object(Bucket=self.bucket, Key=key, Body=b"streamsend probe\n")
            version = put.get("VersionId")
            if version and version != "null":
                # A versioned bucket keeps a deleted object's versions: delete ours, so
                # each start-up does not leave one behind.
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
                    return
                except Exception as exc:
                    if _code(exc) not in _ACCESS_CODES:
                        raise
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._start_error(exc) from None

    def _start_error(self, exc: Exception) -> StreamsendError:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        bucket = repr(self.bucket)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AccessRefused(
                "S3: no AWS credentials found; set aws.access.key.id and "
                "aws.secret.access.key, or configure the default AWS credential chain"
            )
        if isinstance(exc, EndpointConnectionError):
            where = self.endpoint or f"S3 in {self.region}"
            return EnvironmentProblem(
                f"S3: cannot reach {where} (s3.endpoint.url, aws.region): "
                f"{redact(exc, self._secrets)}"
            )
        if isinstance(exc, ClientError):
            code, message = _code(exc), _message(exc) or _code(exc)
            if code == "NoSuchBucket":
                return EnvironmentProblem(f"S3 bucket {bucket} does not exist (s3.bucket.name)")
            if code in _ACCESS_CODES:
                return AccessRefused(
                    f"S3 refuses access to bucket {bucket}: {code}: {message} (check "
                    "aws.access.key.id, aws.secret.access.key and the bucket's policy: the "
                    "downloader writes and deletes objects under s3.prefix)"
                )
            if code in _REGION_CODES:
                return EnvironmentProblem(
                    f"S3 bucket {bucket} is not in region {self.region!r} (aws.region): {message}"
                )
            return EnvironmentProblem(
                f"S3 refused the start-up probe in bucket {bucket}: {code}: {message}"
            )
        return EnvironmentProblem(f"S3: {redact(exc, self._secrets)}")

    # -- delivering ----------------------------------------------------------------

    def deliver(self, t: Transfer, parts: tuple[str, ...], keep_alive: KeepAlive) -> str:
        end = t.end
        assert end is not None
        key = object_key(self.prefix, t.uploader, parts)
        if len(key.encode()) > MAX_KEY_BYTES:
            raise UnsafePath(f"its S3 key would be {len(key.encode())} bytes, over S3's 1024")
        if not (t.redelivery and self._already_there(key, t)):
            fd = self.staging.open_staged(t.transfer)
            try:
                if end.size <= self.part_size:
                    self._put(key, fd, t)
                else:
                    self._multipart(key, fd, t, keep_alive)
            except DestinationUnavailable:
                t.redelivery = True  # the object may exist even though we saw an error
                raise
            except (UnsafePath, VerificationFailed):
                self._abort(key, t.transfer)  # never completed: it will not be delivered
                raise
            finally:
                os.close(fd)
        url = f"s3://{self.bucket}/{key}"
        if self.keep_local:
            return f"{url} and {self.staging.place(t, parts)}"
        self.staging.remove(t.transfer)
        return url

    def finish_round(self) -> None:
        if self.keep_local:
            self.staging.sync_directories()

    def close(self) -> None:
        self.client.close()

    def _metadata(self, t: Transfer) -> dict[str, Any]:
        end = t.end
        assert end is not None
        seconds, nanos = divmod(end.mtime_ns, 1_000_000_000)
        kind = mimetypes.guess_type(t.path)[0] or "application/octet-stream"
        return {
            "Metadata": {
                "sha256": end.sha256,
                "mtime": f"{seconds}.{nanos:09d}",
                "mode": f"{end.mode & 0o7777:04o}",
                "uploader": t.uploader,
                "transfer": t.transfer,
            },
            "ContentType": kind,
        }

    def _already_there(self, key: str, t: Transfer) -> bool:
        """Whether ``key`` already holds this transfer's file (sent before a crash or
        before an error that hid the success)."""
        end = t.end
        assert end is not None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            # Without s3:ListBucket, S3 answers 403 rather than 404 for a missing key; a
            # real refusal then shows at the upload itself.
            if _code(exc) in ("404", "NoSuchKey", "NotFound", *_ACCESS_CODES):
                return False
            raise self._unavailable("HeadObject", exc) from None
        meta = head.get("Metadata", {})
        return (
            meta.get("transfer") == t.transfer
            and meta.get("sha256") == end.sha256
            and head.get("ContentLength") == end.size
        )

    def _put(self, key: str, fd: int, t: Transfer) -> None:
        end = t.end
        assert end is not None
        body = _read(fd, 0, end.size)
        digest = hashlib.sha256(body).digest()
        _same_as_verified(digest.hex(), end.sha256)
        self.faults("s3-put")
        self._call(
            "PutObject",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ChecksumSHA256=_b64(digest),
            **self._metadata(t),
        )

    def _multipart(self, key: str, fd: int, t: Transfer, keep_alive: KeepAlive) -> None:
        end = t.end
        assert end is not None
        upload = self._uploads.get(t.transfer)
        if upload is None:
            self._abort_leftovers(key)
            self.faults("s3-create")
            created = self._call(
                "CreateMultipartUpload",
                self.client.create_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                **self._metadata(t),
            )
            upload = _Upload(str(created["UploadId"]), part_size_for(end.size, self.part_size))
            self._uploads[t.transfer] = upload
        whole = hashlib.sha256()
        for number, offset in enumerate(range(0, end.size, upload.part_size), start=1):
            keep_alive()
            body = _read(fd, offset, min(upload.part_size, end.size - offset))
            whole.update(body)
            if number in upload.parts:
                continue  # confirmed before an outage: not sent again
            checksum = _b64(hashlib.sha256(body).digest())
            self.faults("s3-part")
            sent = self._call(
                "UploadPart",
                self.client.upload_part,
                forget=t.transfer,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload.upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            upload.parts[number] = {
                "PartNumber": number,
                "ETag": sent["ETag"],
                "ChecksumSHA256": checksum,
            }
        _same_as_verified(whole.hexdigest(), end.sha256)
        self.faults("s3-complete")
        self._call(
            "CompleteMultipartUpload",
            self.client.complete_multipart_upload,
            forget=t.transfer,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": [upload.parts[n] for n in sorted(upload.parts)]},
        )
        del self._uploads[t.transfer]

    def _abort_leftovers(self, key: str) -> None:
        """Abort the incomplete uploads of ``key`` (a crashed run's): they would stay
        in the bucket, invisible and billed, for ever."""
        try:
            listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:
            if _code(exc) not in _ACCESS_CODES:
                raise self._unavailable("ListMultipartUploads", exc) from None
            if not self._warned_listing:
                self._warned_listing = True
                log.warning(
                    "cannot list unfinished uploads in bucket %r (%s): the parts a crash "
                    "leaves are not aborted; grant s3:ListBucketMultipartUploads or set an "
                    "AbortIncompleteMultipartUpload lifecycle rule",
                    self.bucket,
                    _code(exc),
                )
            return
        for stale in listed.get("Uploads", []):
            if stale.get("Key") == key and "UploadId" in stale:
                log.info("aborting an unfinished upload of %r left by an earlier run", key)
                self._call(
                    "AbortMultipartUpload", self.client.abort_multipart_upload,
                    Bucket=self.bucket, Key=key, UploadId=stale["UploadId"],
                )  # fmt: skip

    def _abort(self, key: str, transfer: str) -> None:
        upload = self._uploads.pop(transfer, None)
        if upload is None:
            return
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload.upload_id
            )
        except Exception:  # best effort: the next upload of this key aborts it anyway
            log.debug("abort of upload %s failed", upload.upload_id, exc_info=True)

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        forget: str = "",
        **kwargs: Any,
    ) -> Any:
        """``method(**kwargs)``; an error becomes DestinationUnavailable (retried) or
        UnsafePath (a key S3 refuses). When S3 no longer knows the upload of transfer
        ``forget`` (aborted by a lifecycle rule, a store that restarted empty: answered
        NoSuchUpload, or FRESH_UPLOAD_AFTER server errors in a row), it is started
        afresh next time."""
        upload = self._uploads.get(forget)
        try:
            answer = method(**kwargs)
        except Exception as exc:
            code = _code(exc)
            if code in _KEY_CODES:
                raise UnsafePath(f"S3 refuses its key: {code}") from None
            if upload is not None and _status(exc) >= 500:
                upload.failures += 1
            if upload is not None and (
                code == "NoSuchUpload" or upload.failures >= FRESH_UPLOAD_AFTER
            ):
                # Some stores answer a 5xx, not NoSuchUpload, for an upload they lost
                # (restarted empty): after a few in a row, start a fresh one.
                self._uploads.pop(forget, None)
            raise self._unavailable(operation, exc) from None
        if upload is not None:
            upload.failures = 0
        return answer

    def _unavailable(self, operation: str, exc: Exception) -> DestinationUnavailable:
        code = _code(exc)
        if code:
            return DestinationUnavailable(f"S3 {operation}: {code}: {_message(exc) or code}")
        return DestinationUnavailable(f"S3 {operation}: {redact(exc, self._secrets)}")


def _same_as_verified(digest: str, expected: str) -> None:
    if digest != expected:
        raise VerificationFailed(
            f"the staged file changed after verification: SHA-256 {digest}, expected {expected}"
        )


def _code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError, else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError, else 0."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _message(exc: BaseException) -> str:
    """The first line of a ClientError's message, else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    lines = str(response.get("Error", {}).get("Message", "")).splitlines()
    return lines[0] if lines else ""
