"""The configuration model: every Streamsend property, once.

Each property is a dataclass field whose metadata is a :class:`Setting`. Parsing,
validation, precedence (``configload.py``), ``--help`` (``cli.py``) and
``docs/configuration.md`` (``configdocs.py``) are all derived from these fields, so a
property is added or changed here and nowhere else.

Property names follow the original Streamsend documentation so existing config files
keep working. Any librdkafka client property (``security.protocol``, ``linger.ms``...)
is passed through to the Kafka client unchanged and lives in ``kafka``, not here.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

REQUIRED: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Setting:
    """What the configuration model knows about one property."""

    name: str
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    # Returns a description of the broken rule, or None when the value is fine.
    check: Callable[[Any], str | None] | None = None
    default_text: str | None = None  # how the default reads in docs when computed at run time
    secret: bool = False


def setting(name: str, default: Any, help: str, **kw: Any) -> Any:
    """Declare a property as a dataclass field (``default=REQUIRED`` makes it mandatory)."""
    meta = {"setting": Setting(name=name, help=help, **kw)}
    if default is REQUIRED:
        return field(metadata=meta)
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _valid_regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"must be a valid regular expression ({exc})"
    return None


_NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _valid_uploader_name(value: str) -> str | None:
    if not _NAME_RULE.fullmatch(value):
        return "must be 1-128 characters of letters, digits, '.', '_' or '-', not starting with '.'"
    return None


# Amazon's rules are stricter (3-63 lowercase characters); S3-compatible stores accept
# more, and the start-up probe reports what the store itself refuses.
_BUCKET_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def _valid_bucket(value: str) -> str | None:
    if value and not _BUCKET_RULE.fullmatch(value):
        return (
            "must be a bucket name (a name, not a URL or path): letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )
    return None


def _valid_endpoint(value: str) -> str | None:
    if value and not re.fullmatch(r"https?://[^\s/?#]+/?", value):
        return "must be an http:// or https:// URL with a host, like http://127.0.0.1:9000"
    return None


def _valid_prefix(value: str) -> str | None:
    if value.startswith("/") or "//" in value or len(value.encode()) > 512:
        return "must not start with '/', hold '//', or exceed 512 bytes"
    return None


def default_uploader_name() -> str:
    host = socket.gethostname().split(".")[0] or "uploader"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", host).lstrip(".-_")
    return cleaned[:128] or "uploader"


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """Properties both the uploader and the downloader read."""

    role: ClassVar[str] = "common"

    bootstrap_servers: str = setting(
        "bootstrap.servers",
        REQUIRED,
        "Kafka brokers to connect to, as host:port[,host:port...].",
    )
    topic: str = setting(
        "topic",
        REQUIRED,
        "Topic that carries the file chunks. The uploader creates it when missing.",
    )
    log_level: str = setting(
        "log.level",
        "INFO",
        "Logging threshold.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    log_format: str = setting(
        "log.format",
        "text",
        "How log lines are written to stderr. text: one readable line per event. json: one "
        "JSON object per line with time (ISO 8601, UTC), level, logger, message and the "
        "event's fields (event, uploader, path, bytes, duration_s, outcome, cause...), for "
        "log collectors. Untrusted text is escaped in both. See docs/operations.md.",
        choices=("text", "json"),
    )
    aws_region: str = setting(
        "aws.region",
        "",
        "AWS region (us-east-1...): of the Amazon MSK cluster, required with "
        "sasl.mechanism=AWS_MSK_IAM; of the S3 bucket with s3.bucket.name, where empty "
        "means us-east-1.",
        default_text="us-east-1 for S3 output; none (required) for AWS_MSK_IAM",
    )
    aws_access_key_id: str = setting(
        "aws.access.key.id",
        "",
        "AWS access key id for sasl.mechanism=AWS_MSK_IAM and for S3 output. Empty: the "
        "default AWS credential chain (AWS_* environment variables, ~/.aws, container or "
        "instance role).",
    )
    aws_secret_access_key: str = setting(
        "aws.secret.access.key",
        "",
        "AWS secret access key that goes with aws.access.key.id.",
        secret=True,
    )
    aws_session_token: str = setting(
        "aws.session.token",
        "",
        "AWS session token of temporary credentials, with aws.access.key.id.",
        secret=True,
    )
    metrics_port: int = setting(
        "metrics.port",
        0,
        "Serve Prometheus metrics on this TCP port at /metrics, with /healthz (the loop is "
        "turning) and /readyz (connected to Kafka and, for a downloader, assigned "
        "partitions) for probes; 0 = off. Listens on every interface. See "
        "docs/operations.md.",
        minimum=0,
        maximum=65535,
    )
    # librdkafka properties passed through to every Kafka client, verbatim.
    kafka: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class UploaderSettings(CommonSettings):
    """Properties of ``streamsend upload``."""

    role: ClassVar[str] = "uploader"

    input_dir: Path = setting(
        "input.dir",
        REQUIRED,
        "Directory to watch. Subdirectories are walked and mirrored at the downloader.",
    )
    input_file_pattern: str = setting(
        "input.file.pattern",
        ".*",
        "Regular expression that must match the whole file name for a file to be sent.",
        check=_valid_regex,
    )
    file_minimum_age_ms: int = setting(
        "file.minimum.age.ms",
        5000,
        "A file must be unmodified this long before it is sent (protects files being written).",
        minimum=0,
    )
    file_maximum_age_ms: int = setting(
        "file.maximum.age.ms",
        0,
        "Files unmodified for longer than this are ignored; 0 turns the limit off. "
        "Must exceed file.minimum.age.ms.",
        minimum=0,
    )
    uploader_name: str = setting(
        "uploader.name",
        default_uploader_name,
        "Name of this uploader: the folder its files land in at the downloader.",
        check=_valid_uploader_name,
        default_text="the host name",
    )
    binary_chunk_size_bytes: int = setting(
        "binary.chunk.size.bytes",
        0,
        "Bytes of file data per Kafka message; 0 sizes chunks automatically from the "
        "broker's and topic's maximum message size.",
        minimum=0,
        maximum=1_000_000_000,
    )
    upload_payload_percentage: int = setting(
        "upload.payload.percentage",
        95,
        "With automatic chunk sizing, the share of the maximum message size used for data "
        "(the rest is left for key, headers and record overhead).",
        minimum=1,
        maximum=99,
    )
    topic_partitions: int = setting(
        "topic.partitions",
        0,
        "Partitions of the chunk topic when the uploader creates it; 0 means automatic: "
        "4 per broker in the cluster, at least 4 and at most 64 (room for a downloader "
        "group to grow and for parallel fetches, without a partition count that costs "
        "a small cluster). An existing topic keeps its partitions.",
        minimum=0,
        maximum=10_000,
    )
    partitioning: str = setting(
        "partitioning",
        "file",
        "How records are spread over the topic's partitions. file: every record of a file "
        "(and every version of it) on one partition chosen from uploader.name and path, so "
        "files travel in parallel, versions stay in order and a downloader group splits "
        "files between its members. chunk: a file's chunks round-robin over all partitions, "
        "so one huge file uses them all; only a downloader that reads every partition (its "
        "own group.id) can rebuild such files.",
        choices=("file", "chunk"),
    )
    compression_type: str = setting(
        "compression.type",
        "zstd",
        "Codec that compresses each record's value before it is produced (and before any "
        "encryption): zstd, lz4, gzip, snappy or none. A record that would not shrink is "
        "sent as it is. Replaces Kafka's batch compression, which is turned off.",
        choices=("zstd", "lz4", "gzip", "snappy", "none"),
    )
    pack_file_max_bytes: int = setting(
        "pack.file.max.bytes",
        65536,
        "Files up to this size are packed several to a record (each still verified and "
        "delivered on its own); 0 turns packing off.",
        minimum=0,
        maximum=16 * 1024 * 1024,
    )
    topic_replication_factor: int = setting(
        "topic.replication.factor",
        0,
        "Replication factor of topics the uploader creates; 0 means min(3, brokers in the "
        "cluster).",
        minimum=0,
        maximum=32,
    )
    processing_state_topic: str = setting(
        "processing.state.topic",
        "streamsend-state-topic",
        "Compacted topic where the uploader records what it has sent (one record per file), "
        "so a restarted uploader does not send an unchanged file again.",
    )
    processing_state_topic_partitions: int = setting(
        "processing.state.topic.partitions",
        16,
        "Partitions of the state topic when the uploader creates it. Each uploader writes "
        "to, and at start-up reads, only one partition (chosen from the chunk topic and its "
        "uploader.name), so more partitions mean that a starting uploader reads less of "
        "other uploaders' state. Changing the partition count of an existing state topic "
        "moves uploaders to other partitions: they find no state and send every file again.",
        minimum=1,
        maximum=1000,
    )
    processing_state_checkpoint_interval_secs: int = setting(
        "processing.state.checkpoint.interval.secs",
        60,
        "Accepted for compatibility with the original's config files, and validated; it has "
        "no effect here: each file's state record is produced as soon as the file is "
        "acknowledged, so there is no periodic checkpoint to schedule.",
        minimum=1,
        maximum=3600,
    )
    after_upload: str = setting(
        "after.upload",
        "keep",
        "What to do with a file once every chunk is acknowledged: keep it, rename it with a "
        ".FINISHED suffix, or delete it.",
        choices=("keep", "rename", "delete"),
    )
    dry_run: bool = setting(
        "dry.run",
        False,
        "Do everything except produce to Kafka (files are read, hashed and logged).",
    )
    generate_test_file_bytes: int = setting(
        "generate.test.file.bytes",
        0,
        "When above 0, write a random test file of this size into input.dir every 10 seconds.",
        minimum=0,
        maximum=50_000_000,
    )
    scan_interval_ms: int = setting(
        "scan.interval.ms",
        1000,
        "How often input.dir is scanned in full for new or modified files when it cannot be "
        "watched (inotify is Linux-only, and limited by fs.inotify.max_user_watches); also "
        "the shortest time between two full scans when the watch loses events. While "
        "input.dir is watched, files are picked up as they arrive and "
        "full.scan.interval.ms applies instead.",
        minimum=10,
        maximum=3_600_000,
    )
    full_scan_interval_ms: int = setting(
        "full.scan.interval.ms",
        60_000,
        "While input.dir is watched with inotify, how often it is still scanned in full, as "
        "a safety net for changes inotify does not report (files changed by another host "
        "on a network filesystem). New and changed files do not wait for it; recorded files "
        "that left with a whole directory are forgotten by it.",
        minimum=10,
        maximum=86_400_000,
    )
    encryption_recipients: str = setting(
        "encryption.recipients",
        "",
        "Comma-separated age recipients (X25519 public keys, age1...) to encrypt every file "
        "for, end to end: the broker and topic readers without a matching identity learn "
        "neither the contents nor the names. Any recipient (here or in "
        "encryption.recipients.file) turns encryption on. See docs/security.md.",
    )
    encryption_recipients_file: str = setting(
        "encryption.recipients.file",
        "",
        "A file of age recipients, one per line, '#' starting a comment (as age -R reads). "
        "Adds to encryption.recipients.",
    )
    encryption_padding: str = setting(
        "encryption.padding",
        "chunk",
        "How encrypted records are padded. chunk: every record carrying file bytes is padded "
        "to the chunk size, so the topic shows sizes only rounded up to the chunk size "
        "(compression is then skipped: it cannot make a padded record smaller). none: "
        "records keep their compressed length, which saves bandwidth and shows it.",
        choices=("chunk", "none"),
    )
    encryption_uploader_key_file: str = setting(
        "encryption.uploader.key.file",
        "",
        "A secret of this uploader (32 random bytes, created with mode 0600 when missing) "
        "that keys the names of its state records and the choice of partition, so neither "
        "shows a path. Default: .streamsend-uploader.key in input.dir (in the user's data "
        "directory when input.dir is read-only). Losing it only makes the uploader send "
        "every file once more.",
        default_text="input.dir/.streamsend-uploader.key",
    )


@dataclass(frozen=True, kw_only=True)
class ReaderSettings(CommonSettings):
    """Properties of whatever reads the topic's files: ``download`` and ``inspect``."""

    encryption_identity_file: str = setting(
        "encryption.identity.file",
        "",
        "A file of age identities (AGE-SECRET-KEY-1..., one per line, '#' comments, as "
        "age -i reads, and as written by streamsend keygen or age-keygen) to decrypt "
        "end-to-end encrypted files with. Files encrypted for none of them are skipped, "
        "with one line each.",
    )


@dataclass(frozen=True, kw_only=True)
class DownloaderSettings(ReaderSettings):
    """Properties of ``streamsend download``."""

    role: ClassVar[str] = "downloader"

    output_dir: Path = setting(
        "output.dir",
        REQUIRED,
        "Directory files are rebuilt under, as {output.dir}/{uploader.name}/{path}. "
        "Created when missing. With s3.bucket.name it is the staging and bookkeeping area: "
        "files are verified there, then uploaded.",
    )
    idle_exit_ms: int = setting(
        "idle.exit.ms",
        0,
        "Exit after this long without a new message (0 = run until stopped). The exit code "
        "says whether every file that was started has been delivered.",
        minimum=0,
    )
    partial_file_expiry_ms: int = setting(
        "partial.file.expiry.ms",
        86_400_000,
        "An unfinished file that receives nothing for this long is abandoned and its staging "
        "data removed (an uploader that died mid-file sends it again from the start).",
        minimum=1000,
    )
    staging_max_transfers_per_uploader: int = setting(
        "staging.max.transfers.per.uploader",
        1000,
        "Unfinished transfers one uploader may have in staging at once (verified files "
        "waiting for their delivery round do not count); a transfer beyond it is refused "
        "(logged, nothing staged), so one uploader, or someone writing records in its name, "
        "cannot take the staging area from the others.",
        minimum=1,
        maximum=10_000_000,
    )
    staging_max_bytes_per_uploader: int = setting(
        "staging.max.bytes.per.uploader",
        0,
        "Bytes one uploader's unfinished transfers may hold in staging: while an uploader "
        "holds this much, its new transfers are refused (those under way continue). 0 means "
        "half the size of output.dir's filesystem. A transfer declaring more bytes than the "
        "whole filesystem is always refused.",
        minimum=0,
        default_text="0 (half the output filesystem)",
    )
    rejected_retention_ms: int = setting(
        "rejected.retention.ms",
        7 * 86_400_000,
        "Files that failed verification are kept in .streamsend/rejected/ this long, for "
        "inspection, then deleted.",
        minimum=1000,
    )
    commit_interval_ms: int = setting(
        "commit.interval.ms",
        5000,
        "How often staged data is fsynced and the consumed offsets committed. Offsets are only "
        "ever committed for data that is durably on disk.",
        minimum=100,
        maximum=600_000,
    )
    s3_bucket_name: str = setting(
        "s3.bucket.name",
        "",
        "Deliver files to this S3 bucket, as objects {s3.prefix}{uploader.name}/{path}, "
        "instead of under output.dir (which stays the staging area). Each file is verified "
        "in staging, uploaded (multipart above s3.part.size.bytes, visible only once "
        "complete), then removed from staging. Empty: deliver to output.dir. See "
        "docs/operations.md.",
        check=_valid_bucket,
    )
    s3_endpoint_url: str = setting(
        "s3.endpoint.url",
        "",
        "Endpoint of an S3-compatible store (MinIO, Ceph, R2...), as http(s)://host[:port]; "
        "buckets are then addressed by path. Empty: Amazon S3 in aws.region.",
        check=_valid_endpoint,
    )
    s3_prefix: str = setting(
        "s3.prefix",
        "",
        "Prefix of every object key, written as is: end it with '/' for a folder "
        "(data/edge/ gives data/edge/{uploader.name}/{path}).",
        check=_valid_prefix,
    )
    s3_part_size_bytes: int = setting(
        "s3.part.size.bytes",
        16 * 1024 * 1024,
        "Part size of multipart uploads: a file up to this size is one PUT, a larger one is "
        "sent in parts of this size (grown for a file that would need more than 10,000), "
        "read one at a time, so memory stays flat whatever the file's size.",
        minimum=5 * 1024 * 1024,
        maximum=512 * 1024 * 1024,
    )
    s3_keep_local_copy: bool = setting(
        "s3.keep.local.copy",
        False,
        "Also keep each file delivered to S3 under output.dir/{uploader.name}/{path}, as "
        "without S3; by default the staged copy is deleted once the object is confirmed.",
    )


def default_text(f: dataclasses.Field[Any], s: Setting) -> str | None:
    """How a property's default reads in --help and the docs; None when it is required."""
    if s.default_text is not None:
        return s.default_text
    if f.default is dataclasses.MISSING:
        return None if f.default_factory is dataclasses.MISSING else "computed at start-up"
    if isinstance(f.default, bool):
        return "yes" if f.default else "no"
    if f.default == "":
        return "empty"
    return str(f.default)


# The sections of --help (and their order): a property belongs to the first section one of
# whose name prefixes it starts with.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Kafka connection", ("bootstrap.servers", "aws.")),
    ("Topic and chunks", ("topic", "binary.chunk", "upload.payload", "partitioning",
                          "compression.", "pack.")),
    ("Files to send", ("input.", "file.", "uploader.name", "after.upload", "scan.",
                       "full.scan", "generate.test", "dry.run")),
    ("Uploader state", ("processing.state.",)),
    ("Output and staging", ("output.dir", "idle.exit", "partial.file", "staging.",
                            "rejected.", "commit.interval")),
    ("S3 output", ("s3.",)),
    ("End-to-end encryption", ("encryption.",)),
    ("Logs and metrics", ("log.", "metrics.")),
)  # fmt: skip


def group_of(name: str) -> str:
    """The --help section of property ``name``."""
    for title, prefixes in GROUPS:
        if any(name.startswith(prefix) for prefix in prefixes):
            return title
    return "Other"


def settings_fields(cls: type[CommonSettings]) -> list[tuple[dataclasses.Field[Any], Setting]]:
    """The declared properties of a settings class, in declaration order."""
    return [(f, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def all_property_names() -> set[str]:
    return {
        s.name for cls in (UploaderSettings, DownloaderSettings) for _, s in settings_fields(cls)
    }
