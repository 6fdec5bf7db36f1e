"""The figures of the suite, one function per section. Every streamsend side runs as
its own process through the real CLI; every delivered file is compared byte for byte
(SHA-256) with what was sent, and any failure fails the section."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bench.common import (
    BenchFailure,
    Child,
    Exit,
    SourceFile,
    human_size,
    percentile,
    settle,
    sha256_of,
    unique,
    verify,
    wait_delivered,
    write_random,
    write_sized_files,
    write_small_files,
    write_text,
)
from bench.context import (
    CODECS,
    CONNECTED,
    UPLOADER,
    Bench,
    RawRun,
    fail_unless,
    mbps,
    mib,
    ratio,
    secs,
)
from bench.report import Section

SectionFn = Callable[[Bench, Section], None]
T = TypeVar("T")


def large(b: Bench, s: Section) -> None:
    """Figures 1 and 2: the raw client limit, and one large file up and down."""
    size, partitions = b.sizes.large, 1
    d = b.enter(s.name)
    src = write_random(d / "in" / "large.bin", size, random.Random(1))
    topic, raw_topic = unique("large"), unique("raw")
    b.kafka.create_topic(raw_topic, partitions)
    limit = b.kafka.message_limit()

    def raw_producer(chunk: int) -> RawRun:
        run = b.raw_produce("raw-producer", raw_topic, d / "in" / "large.bin", chunk, limit)
        fail_unless(run.result["bytes"] == size, "the raw producer did not send the whole file")
        return run

    # Every other run measures the raw clients first, so that neither side always goes
    # first; the raw producer needs the uploader's chunk size, learnt in the first run.
    raw_first = b.run_index % 2 == 1 and "chunk" in b.memo
    producer = raw_producer(b.memo["chunk"]) if raw_first else None
    up = b.upload_once("upload", topic, d / "in", size, extra=["--topic.partitions", "1"])
    down = b.download_all("download", topic, d / "out", [src]) if raw_first else None
    # The raw consumer reads the topic the uploader filled: the same bytes, messages and
    # partitions the downloader reads.
    bounded = b.raw_consume("raw-consumer-bounded", topic, bounded=True, nbytes=size)
    free = b.raw_consume("raw-consumer-defaults", topic, bounded=False, nbytes=size)
    chunk = int(bounded.result["largest_value"])
    messages = int(bounded.result["messages"])
    fail_unless(messages >= -(-size // chunk), f"{messages} records on {topic} for {size} bytes")
    fail_unless(chunk == b.memo.setdefault("chunk", chunk), "the uploader's chunk size changed")
    producer = producer or raw_producer(chunk)
    down = down or b.download_all("download", topic, d / "out", [src])

    s.setup.update(file=human_size(size), partitions=partitions, chunk_bytes=chunk,
                   records=messages, broker_message_max_bytes=limit,
                   compression=b.features.default_codec or "none (no option)",
                   verified=f"sha256 {src.sha256[:16]}")  # fmt: skip
    up_mbps = mbps(size, up.exit.seconds)
    raw_up = mbps(size, producer.exit.seconds)
    down_mbps = mbps(size, down.delivered_s)
    raw_down = mbps(size, bounded.at("last_message"))
    connect = up.connect_s or 0.0
    s.row("upload --once, start to exit", ratio(up_mbps, raw_up), "raw producer, start to exit",
          MBps=up_mbps, seconds=round(up.exit.seconds, 2),
          MBps_after_connect=mbps(size, up.exit.seconds - connect),
          connect_s=secs(up.connect_s), peak_RSS_MiB=mib(up.exit.peak_rss),
          note="connect: start until topics exist and state is read")  # fmt: skip
    s.row("raw producer, start to exit", MBps=raw_up, seconds=round(producer.exit.seconds, 2),
          MBps_after_connect=mbps(size, producer.between("first_produce", "flushed")),
          connect_s=secs(producer.at("first_produce")), peak_RSS_MiB=mib(producer.exit.peak_rss),
          note="acks=all, idempotence, linger 5 ms, uploader's batch/queue sizes")  # fmt: skip
    s.row("download, start to file delivered", ratio(down_mbps, raw_down),
          "raw consumer (same bounds), start to last record",
          MBps=down_mbps, seconds=round(down.delivered_s, 2),
          MBps_after_connect=mbps(size, down.delivered_s - (down.assigned_s or 0)),
          connect_s=secs(down.assigned_s), peak_RSS_MiB=mib(down.exit.peak_rss),
          note="connect: start until partitions assigned; idle exit not counted")  # fmt: skip
    for name, run, what in (
        ("raw consumer, downloader's prefetch bounds", bounded, "reads and counts, no disk"),
        ("raw consumer, librdkafka defaults", free, "unbounded prefetch, for reference"),
    ):
        s.row(name, MBps=mbps(size, run.at("last_message")),
              seconds=round(run.at("last_message") or 0, 2),
              MBps_after_connect=mbps(size, run.between("assigned", "last_message")),
              connect_s=secs(run.at("assigned")), peak_RSS_MiB=mib(run.exit.peak_rss),
              note=what)  # fmt: skip


def small(b: Bench, s: Section) -> None:
    """Figure 3: many small files end to end with the downloader already running."""
    n = b.sizes.small_files
    d = b.enter(s.name)
    files = write_small_files(d / "in", n, random.Random(3))
    nbytes = sum(f.size for f in files)
    topic = unique("small")
    b.kafka.create_topic(topic, 1)
    out = d / "out"
    down = b.downloader("download", topic, out, idle_exit=False)
    b.warm_up(topic, down, out)
    settle()
    up = b.uploader("upload", topic, d / "in", once=True)
    at = wait_delivered(
        [[out / UPLOADER / f.relative] for f in files], [down, up], b.timeout(nbytes, n)
    )
    up_exit = up.finish(b.timeout(nbytes, n))
    connect = up.mark(CONNECTED)
    down_exit = down.expect(down.stop())
    verify(files, [out / UPLOADER])
    e2e = at - up.started
    s.setup.update(files=n, bytes=nbytes, sizes="1-16 KiB random", dirs="2-3 levels",
                   partitions=1, file_minimum_age_ms=0)  # fmt: skip
    s.row("uploader start to last file delivered", files_per_s=round(n / e2e, 1),
          MBps=mbps(nbytes, e2e), seconds=round(e2e, 2),
          upload_RSS_MiB=mib(up_exit.peak_rss), download_RSS_MiB=mib(down_exit.peak_rss),
          note="downloader running and caught up before the uploader starts")  # fmt: skip
    s.row("upload --once, start to exit", files_per_s=round(n / up_exit.seconds, 1),
          MBps=mbps(nbytes, up_exit.seconds), seconds=round(up_exit.seconds, 2),
          connect_s=secs(connect))  # fmt: skip


def latency(b: Bench, s: Section) -> None:
    """Figure 4: one small file from its rename into input.dir to its final path."""
    n = b.sizes.latency_files
    d = b.enter(s.name)
    source, staging, out = d / "in", d / "staging", d / "out"
    (source / "lat").mkdir(parents=True)
    staging.mkdir()
    topic = unique("latency")
    b.kafka.create_topic(topic, 1)
    down = b.downloader("download", topic, out, idle_exit=False)
    up = b.uploader("upload", topic, source, once=False)
    services = [down, up]
    (staging / "warm-up.txt").write_text("warm-up\n")
    os.rename(staging / "warm-up.txt", source / "warm-up.txt")
    wait_delivered([[out / UPLOADER / "warm-up.txt"]], services, 120)
    rng = random.Random(4)
    files: list[SourceFile] = []
    seconds: list[float] = []
    for i in range(n):
        data = rng.randbytes(rng.randint(1024, 16 * 1024))
        relative = f"lat/file-{i:04d}.bin"
        (staging / "next").write_bytes(data)
        started = time.monotonic()
        os.rename(staging / "next", source / relative)
        arrived = wait_delivered([[out / UPLOADER / relative]], services, 60, interval=0.001)
        seconds.append(arrived - started)
        files.append(SourceFile(relative, len(data), sha256_of(source / relative)))
        time.sleep(rng.uniform(0.05, 0.15))
    verify(files, [out / UPLOADER])
    up.expect(up.stop())
    down.expect(down.stop())
    ms = [x * 1000 for x in seconds]
    s.setup.update(files=n, sizes="1-16 KiB", gap_ms="50-150 random", file_minimum_age_ms=0,
                   scan_interval_ms="default")  # fmt: skip
    s.row("rename into input.dir to final path", median_ms=round(percentile(ms, 50), 1),
          p99_ms=round(percentile(ms, 99), 1), min_ms=round(min(ms), 1),
          max_ms=round(max(ms), 1), mean_ms=round(sum(ms) / n, 1),
          note="both sides running as services")  # fmt: skip


def rss(b: Bench, s: Section) -> None:
    """Figure 5: peak RSS of each side for two file sizes (constant memory)."""
    d = b.enter(s.name)
    for size in b.sizes.rss:
        tag = human_size(size).replace(" ", "")
        sub = d / tag
        src = write_random(sub / "in" / "file.bin", size, random.Random(5))
        topic = unique(f"rss-{tag.lower()}")
        up = b.upload_once(f"upload-{tag}", topic, sub / "in", size)
        down = b.download_all(f"download-{tag}", topic, sub / "out", [src])
        s.row(f"{human_size(size)} file", upload_RSS_MiB=mib(up.exit.peak_rss),
              download_RSS_MiB=mib(down.exit.peak_rss), upload_MBps=mbps(size, up.exit.seconds),
              download_MBps=mbps(size, down.delivered_s))  # fmt: skip
        shutil.rmtree(sub)
        b.kafka.delete_all()
    s.notes.append("peak RSS: ru_maxrss of each side's process from os.wait4")


def partitions(b: Bench, s: Section) -> None:
    """Figure 6: one large file on 1 and 4 partitions (and chunk partitioning)."""
    size = b.sizes.partitions
    d = b.enter(s.name)
    src = write_random(d / "in" / "file.bin", size, random.Random(6))
    variants: list[tuple[int, str | None]] = [(1, None), (4, None)]
    if b.features.partitioning:
        variants += [(4, "chunk")]
    else:
        s.notes.append("`streamsend upload --help` lists no --partitioning: chunk row skipped")
    s.setup.update(file=human_size(size))
    measured: dict[tuple[int, str | None], tuple[float | None, float | None, str]] = {}
    for count, mode in rotated(variants, b.run_index):
        tag = f"p{count}-{mode or 'default'}"
        topic = unique(tag)
        extra = ["--topic.partitions", str(count), *(["--partitioning", mode] if mode else [])]
        up = b.upload_once(f"upload-{tag}", topic, d / "in", size, extra=extra)
        spread = "/".join(map(str, b.kafka.records_per_partition(topic)))
        down = b.download_all(f"download-{tag}", topic, d / f"out-{tag}", [src])
        measured[count, mode] = (mbps(size, up.exit.seconds), mbps(size, down.delivered_s), spread)
        shutil.rmtree(d / f"out-{tag}")
        b.kafka.delete_all()
    base = measured[1, None]
    for count, mode in variants:
        label = f"{count} partition{'s' * (count > 1)}, partitioning {mode or 'default'}"
        up_mbps, down_mbps, spread = measured[count, mode]
        for side, value, reference in (
            ("upload", up_mbps, base[0]),
            ("download", down_mbps, base[1]),
        ):
            first = (count, mode) == (1, None)
            s.row(f"{side}, {label}", None if first else ratio(value, reference),
                  "" if first else f"{side}, 1 partition",
                  MBps=value, note=f"records per partition {spread}")  # fmt: skip


def group(b: Bench, s: Section) -> None:
    """Figure 7: a downloader group of 2 against 1 downloader, on 4 partitions.

    A group that forms while records are waiting is not a group: the first member takes
    every partition and may be done before the second joins. So each variant's members
    join first, on an empty topic, until the group is stable with every partition
    assigned; then they are stopped (SIGSTOP), the uploader fills the topic, and the time
    runs from SIGCONT until every file is delivered."""
    n, size = b.sizes.group_files, b.sizes.group_file_size
    d = b.enter(s.name)
    files = write_sized_files(d / "in", n, size, random.Random(7))
    nbytes = n * size
    s.setup.update(files=n, file=human_size(size), partitions=4)
    rows: dict[int, tuple[float, list[Exit], str, str]] = {}
    for members in rotated([1, 2], b.run_index):
        topic = unique(f"group{members}")
        b.kafka.create_topic(topic, 4)
        group_id = unique("group-id")
        outs = [d / f"out-{members}{x}" for x in "ab"[:members]]
        kids = [
            b.downloader(f"download-{out.name}", topic, out, idle_exit=False,
                         extra=["--group.id", group_id])
            for out in outs
        ]  # fmt: skip
        deadline = time.monotonic() + 120
        while not b.kafka.group_ready(group_id, members, 4):
            for kid in kids:
                if kid.poll() is not None:
                    raise BenchFailure(f"{kid.name} exited while joining; {kid.where()}")
            fail_unless(time.monotonic() < deadline, f"group {group_id} never became stable")
            time.sleep(0.2)
        for kid in kids:
            kid.pause()
        try:
            b.upload_once(f"upload-{members}", topic, d / "in", nbytes, n,
                          extra=["--topic.partitions", "4"])  # fmt: skip
            settle()
        finally:
            for kid in kids:
                kid.pause(resume=True)
        started = time.monotonic()
        at = wait_delivered(
            [[out / UPLOADER / f.relative for out in outs] for f in files],
            kids,
            b.timeout(nbytes, n),
        )
        exits = [kid.expect(kid.stop()) for kid in kids]
        held = verify(files, [out / UPLOADER for out in outs])  # exactly one place each
        spread = "/".join(map(str, b.kafka.records_per_partition(topic)))
        split = "/".join(str(held[out / UPLOADER]) for out in outs)
        rows[members] = (at - started, exits, spread, split)
        for out in outs:
            shutil.rmtree(out)
    one, exits, spread, _ = rows[1]
    s.row("1 downloader", files_per_s=round(n / one, 1), MBps=mbps(nbytes, one),
          seconds=round(one, 2), peak_RSS_MiB=mib(exits[0].peak_rss),
          note=f"records per partition {spread}")  # fmt: skip
    two, exits, _, split = rows[2]
    s.row("2 downloaders, one group.id", ratio(one, two), "1 downloader",
          files_per_s=round(n / two, 1), MBps=mbps(nbytes, two), seconds=round(two, 2),
          peak_RSS_MiB=mib(max(e.peak_rss for e in exits)),
          note=f"files per member {split}, each file in exactly one")  # fmt: skip
    s.notes.append("members join an empty topic first; time runs from resuming them on a "
                   "filled topic until every file is delivered")  # fmt: skip


def rotated(items: list[T], by: int) -> list[T]:
    """The order of a section's variants in its ``by``-th run, so that no variant always
    runs first (or last) when a section is repeated."""
    k = by % len(items)
    return items[k:] + items[:k]


def funnel(b: Bench, s: Section) -> None:
    """Figure 8: many simulated uploaders (protocol code, one process) into one downloader."""
    n, uploaders = b.sizes.funnel_files, b.sizes.funnel_uploaders
    d = b.enter(s.name)
    topic = unique("funnel")
    b.kafka.create_topic(topic, 1)
    expected = d / "expected.json"
    cmd = [sys.executable, "-m", "bench.funnel", "--bootstrap", b.kafka.bootstrap,
           "--topic", topic, "--files", str(n), "--uploaders", str(uploaders),
           "--expected", str(expected)]  # fmt: skip
    produced = Child("funnel-producer", cmd, b.log("funnel-producer")).finish(b.timeout(0, n))
    files = [SourceFile(rel, size, sha) for rel, size, sha in json.loads(expected.read_text())]
    fail_unless(len(files) == n, f"the funnel producer wrote {len(files)} of {n} files")
    nbytes = sum(f.size for f in files)
    down = b.download_all("download", topic, d / "out", files, uploader="")
    after = down.delivered_s - (down.assigned_s or 0)
    s.setup.update(files=n, uploaders=uploaders, bytes=nbytes, partitions=1,
                   producer_s=round(produced.seconds, 1))  # fmt: skip
    s.row(f"1 downloader, {uploaders:,} uploaders", files_per_s=round(n / down.delivered_s, 1),
          files_per_s_after_assignment=round(n / after, 1), MBps=mbps(nbytes, down.delivered_s),
          seconds=round(down.delivered_s, 2), peak_RSS_MiB=mib(down.exit.peak_rss),
          note="topic filled first; interleaved transfers, 4 KiB chunks")  # fmt: skip


def compression(b: Bench, s: Section) -> None:
    """Per-chunk codecs, when the uploader has them: speed and bytes on the topic."""
    if not b.features.codecs:
        s.status = "skipped"
        s.notes.append("`streamsend upload --help` lists no --compression.type")
        return
    codecs = [c for c in CODECS if c in b.features.codecs]
    if missing := [c for c in CODECS if c not in b.features.codecs]:
        s.notes.append(f"codecs not offered by --compression.type: {', '.join(missing)}")
    d = b.enter(s.name)
    rng = random.Random(8)
    workloads: list[tuple[str, str, Path, list[SourceFile]]] = []
    for kind in ("text", "random"):
        big = d / kind / "large"
        one = (
            write_text(big / "large.bin", b.sizes.codec_large, rng, d / "text-block")
            if kind == "text"
            else write_random(big / "large.bin", b.sizes.codec_large, rng)
        )
        workloads.append(("large", kind, big, [one]))
        many = d / kind / "small"
        count = b.sizes.codec_small_files
        workloads.append(
            ("small", kind, many, write_small_files(many, count, rng, text=kind == "text"))
        )
    s.setup.update(large=human_size(b.sizes.codec_large), small_files=b.sizes.codec_small_files,
                   text="log-like lines", random="incompressible")  # fmt: skip
    for workload, kind, source, files in workloads:
        nbytes = sum(f.size for f in files)
        for codec in codecs:
            tag = f"{workload}-{kind}-{codec}"
            topic = unique(tag)
            up = b.upload_once(f"upload-{tag}", topic, source, nbytes, len(files),
                               extra=["--compression.type", codec])  # fmt: skip
            counted = b.raw_consume(f"count-{tag}", topic, bounded=False, nbytes=nbytes)
            on_topic = int(counted.result["value_bytes"]) + int(
                counted.result["key_and_header_bytes"]
            )
            log_bytes = b.kafka.log_bytes(topic)
            down = b.download_all(
                f"download-{tag}", topic, d / f"out-{tag}", files, idle_exit=False
            )
            per_s = round(len(files) / down.delivered_s, 1) if len(files) > 1 else None
            s.row(f"{workload} {kind}, {codec}", round(on_topic / nbytes, 3),
                  "file bytes (record bytes on topic)", headline=False,
                  upload_MBps=mbps(nbytes, up.exit.seconds),
                  download_MBps=mbps(nbytes, down.delivered_s), files_per_s=per_s,
                  record_MiB=mib(on_topic),
                  log_MiB=mib(log_bytes) if log_bytes is not None else None)  # fmt: skip
            shutil.rmtree(d / f"out-{tag}")
            b.kafka.delete_all()
    s.notes.append("record bytes: keys + values + headers as a consumer sees them; log: the "
                   "broker's segment files (local broker only)")  # fmt: skip


def encryption(b: Bench, s: Section) -> None:
    """End-to-end encryption: its cost in speed, and padding's cost in bytes on the topic."""
    d = b.enter(s.name)
    made = subprocess.run([*b.cli, "keygen", "-o", str(d / "id.key")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    fail_unless(made.returncode == 0, f"streamsend keygen failed: {made.stderr.strip()}")
    recipient = made.stdout.strip()
    identity = ["--encryption.identity.file", str(d / "id.key")]
    rng = random.Random(9)
    big, many = d / "large", d / "small"
    workloads = [
        ("large random", big, [write_random(big / "large.bin", b.sizes.codec_large, rng)]),
        ("small text", many, write_small_files(many, b.sizes.codec_small_files, rng, text=True)),
    ]
    variants: list[tuple[str, list[str]]] = [
        ("plain", []),
        ("encrypted, padding chunk", ["--encryption.recipients", recipient]),
        ("encrypted, padding none",
         ["--encryption.recipients", recipient, "--encryption.padding", "none"]),
    ]  # fmt: skip
    s.setup.update(large=human_size(b.sizes.codec_large), small_files=b.sizes.codec_small_files,
                   compression="zstd (default)")  # fmt: skip
    for workload, source, files in workloads:
        nbytes = sum(f.size for f in files)
        for variant, extra in rotated(variants, b.run_index):
            tag = f"{workload}-{variant}".replace(" ", "-").replace(",", "")
            topic = unique(tag)
            up = b.upload_once(f"upload-{tag}", topic, source, nbytes, len(files), extra=extra)
            counted = b.raw_consume(f"count-{tag}", topic, bounded=False, nbytes=nbytes)
            on_topic = int(counted.result["value_bytes"]) + int(
                counted.result["key_and_header_bytes"]
            )
            down = b.download_all(f"download-{tag}", topic, d / f"out-{tag}", files,
                                  idle_exit=False, extra=identity)  # fmt: skip
            per_s = round(len(files) / down.delivered_s, 1) if len(files) > 1 else None
            s.row(f"{workload}, {variant}", round(on_topic / nbytes, 3),
                  "file bytes (record bytes on topic)", headline=False,
                  upload_MBps=mbps(nbytes, up.exit.seconds),
                  download_MBps=mbps(nbytes, down.delivered_s), files_per_s=per_s,
                  record_MiB=mib(on_topic))  # fmt: skip
            shutil.rmtree(d / f"out-{tag}")
            b.kafka.delete_all()
    s.notes.append("padding chunk pads every record with file bytes to the chunk size, so "
                   "small files (packed) and the last chunk of each file cost a whole chunk; "
                   "compression is skipped then")  # fmt: skip


@contextlib.contextmanager
def moto_server(d: Path) -> Iterator[str]:
    """moto's standalone S3 server (``moto[server]``, a dev dependency) on a free
    loopback port, for the s3 section; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (d / "moto.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            fail_unless(proc.poll() is None, "moto server exited (pip install 'moto[server]')")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                fail_unless(time.monotonic() < deadline, "moto server did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def s3(b: Bench, s: Section) -> None:
    """Delivery to S3 (moto's server on loopback): speed and the downloader's peak RSS
    for the rss section's two sizes, with the local delivery of the same file."""
    import boto3

    d = b.enter(s.name)
    with moto_server(d) as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        client.create_bucket(Bucket="bench")
        to_s3 = ["--s3.bucket.name", "bench", "--s3.endpoint.url", url,
                 "--aws.access.key.id", "bench", "--aws.secret.access.key", "bench"]  # fmt: skip
        for size in b.sizes.rss:
            tag = human_size(size).replace(" ", "")
            sub = d / tag
            src = write_random(sub / "in" / "file.bin", size, random.Random(11))
            topic = unique(f"s3-{tag.lower()}")
            b.upload_once(f"upload-{tag}", topic, sub / "in", size)
            local = b.download_all(f"download-local-{tag}", topic, sub / "local", [src])
            settle()
            child = b.downloader(f"download-s3-{tag}", topic, sub / "s3", True, extra=to_s3)
            done = child.finish(b.timeout(size) + 120)
            child.expect(done)
            delivered = child.mark("delivered ")
            fail_unless(delivered is not None, "the S3 downloader delivered nothing")
            body = client.get_object(Bucket="bench", Key=f"{UPLOADER}/{src.relative}")["Body"]
            digest = hashlib.sha256()
            while block := body.read(8 << 20):
                digest.update(block)
            fail_unless(digest.hexdigest() == src.sha256, "the S3 object differs from the file")
            to_s3_mbps, local_mbps = mbps(size, delivered), mbps(size, local.delivered_s)
            s.row(f"{human_size(size)} file", ratio(to_s3_mbps, local_mbps),
                  "S3 / local delivery speed", s3_MBps=to_s3_mbps, local_MBps=local_mbps,
                  s3_RSS_MiB=mib(done.peak_rss),
                  local_RSS_MiB=mib(local.exit.peak_rss))  # fmt: skip
            client.delete_object(Bucket="bench", Key=f"{UPLOADER}/{src.relative}")
            shutil.rmtree(sub)
            b.kafka.delete_all()
    s.notes.append("to S3: from the downloader's start until its log says delivered (the "
                   "file is verified in staging, then uploaded in 16 MiB parts)")  # fmt: skip


SECTIONS: dict[str, tuple[SectionFn, str]] = {
    "large": (large, "raw client limit, and one large file up and down"),
    "small": (small, "small files end to end, downloader running"),
    "latency": (latency, "latency of one small file, both sides running"),
    "rss": (rss, "peak RSS per side"),
    "partitions": (partitions, "1 vs 4 partitions, one large file"),
    "group": (group, "downloader group of 2 vs 1"),
    "funnel": (funnel, "funnel of simulated uploaders into one downloader"),
    "compression": (compression, "per-chunk compression codecs"),
    "encryption": (encryption, "end-to-end encryption: speed, and padding's bytes"),
    "s3": (s3, "delivery to S3: speed and peak RSS"),
}
