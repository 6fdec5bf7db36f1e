"""Find Java and the Apache Kafka jars; resolve the jars from Maven Central once.

Kafka is not packaged for pip, and the download site is not reachable everywhere, so the
broker comes from Maven Central: ``mvn dependency:copy-dependencies`` on a generated pom
copies ``kafka_2.13`` and its runtime closure into a per-version cache. A marker file is
written last, so an interrupted resolve is detected and redone instead of leaving a
half-filled classpath that fails at broker start with an obscure ``NoClassDefFoundError``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import platformdirs

from streamsend.errors import EnvironmentProblem
from streamsend.localkafka.locking import dir_lock

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka brings slf4j-api and log4j-core but no SLF4J binding: without this jar the broker
# logs nothing at all. Same version as the log4j-core that kafka 4.1.1 resolves.
LOG4J_SLF4J_VERSION = "2.24.3"
MIN_JAVA = 17
MVN_TIMEOUT_SECONDS = 900.0
_MARKER = "complete"

_INSTALL_HINT = "install a JDK 17+ and Maven (Debian/Ubuntu: apt-get install openjdk-17-jdk maven)"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamsend.local</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <!-- pinned: the default plugin version depends on the local Maven install -->
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def kafka_cache_dir() -> Path:
    """Per-version cache directory; the jars live in its ``libs`` subdirectory."""
    return Path(platformdirs.user_cache_dir("streamsend")) / f"kafka-{KAFKA_VERSION}"


def find_java() -> str:
    """Path of a Java 17+ executable, or EnvironmentProblem saying what to install."""
    java = shutil.which("java")
    if java is None:
        raise EnvironmentProblem(f"java was not found on PATH: {_INSTALL_HINT}")
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"could not run {java} -version: {exc}") from exc
    # `java -version` writes e.g. 'openjdk version "17.0.15" 2025-04-15' (or "1.8.0_x").
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is not None:
        major = int(match.group(1))
        if major == 1 and match.group(2) is not None:
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise EnvironmentProblem(
                f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+: "
                f"{_INSTALL_HINT}"
            )
    return java


def libs_dir(progress: Callable[[str], None] | None = None) -> Path:
    """Directory holding the complete broker classpath, resolving it first if needed."""
    cache = kafka_cache_dir()
    libs = cache / "libs"
    if (cache / _MARKER).is_file():
        return libs
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the jar cache {cache}: {exc}") from exc
    # Two processes (parallel test sessions) may resolve at once; let one do it.
    with dir_lock(cache, what="resolving the Kafka jars", timeout=MVN_TIMEOUT_SECONDS + 60):
        if not (cache / _MARKER).is_file():
            _resolve(libs, progress)
            (cache / _MARKER).write_text(f"kafka {KAFKA_VERSION}\n", encoding="utf-8")
    return libs


def _resolve(libs: Path, progress: Callable[[str], None] | None) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EnvironmentProblem(
            f"mvn (Maven) was not found on PATH; it is needed once to fetch the Kafka "
            f"{KAFKA_VERSION} jars: {_INSTALL_HINT}"
        )
    if progress is not None:
        progress(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven into {libs} (once)")
    # A previous half-finished run may have left stale or partial jars behind.
    shutil.rmtree(libs, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="streamsend-mvn-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            _POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_SLF4J_VERSION),
            encoding="utf-8",
        )
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=MVN_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EnvironmentProblem(
                f"Maven did not finish resolving the Kafka jars within "
                f"{MVN_TIMEOUT_SECONDS:.0f} s (is Maven Central reachable?)"
                f"{_tail(_text(exc.stdout) + _text(exc.stderr))}"
            ) from exc
    if done.returncode != 0:
        raise EnvironmentProblem(
            f"Maven failed (exit {done.returncode}) resolving the Kafka {KAFKA_VERSION} jars"
            f"{_tail(done.stdout + done.stderr)}"
        )
    if not any(libs.glob(f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar")):
        raise EnvironmentProblem(f"Maven ran but {libs} has no kafka_{SCALA_VERSION} jar")


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _tail(output: str, lines: int = 20) -> str:
    kept = [line for line in output.splitlines() if line.strip()][-lines:]
    return (":\n" + "\n".join(kept)) if kept else " (no output)"
