"""Which files the uploader takes, and which input directories it refuses. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from streamsend.errors import ConfigError

SKIPPED_SUFFIXES = (".PROCESSING", ".FINISHED")

# Top-level directories whose contents belong to the system; watching one of them
# (and possibly deleting from it with after.upload=delete) is refused outright.
SYSTEM_DIRS = frozenset(
    {
        "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
        "/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var", "/home",
        "/opt", "/srv", "/mnt", "/media", "/snap",
    }
)  # fmt: skip


def refuse_system_dir(resolved: PurePosixPath) -> None:
    if str(resolved) in SYSTEM_DIRS:
        raise ConfigError(
            f"input.dir {str(resolved)!r} is a system directory; choose a subdirectory of it"
        )


@dataclass(frozen=True)
class FileRules:
    pattern: re.Pattern[str]
    minimum_age_ns: int
    maximum_age_ns: int  # 0 = no limit

    @classmethod
    def from_settings(cls, pattern: str, minimum_age_ms: int, maximum_age_ms: int) -> FileRules:
        # DOTALL: '.*' means every name, also one with a newline, which must then be
        # reported as unsendable rather than silently never seen.
        return cls(
            re.compile(pattern, re.DOTALL),
            minimum_age_ms * 1_000_000,
            maximum_age_ms * 1_000_000,
        )

    def wanted_name(self, relative: str) -> bool:
        """Name rules: hidden files and directories, bookkeeping suffixes, the pattern."""
        parts = relative.split("/")
        if any(part.startswith(".") for part in parts):
            return False
        name = parts[-1]
        if name.endswith(SKIPPED_SUFFIXES):
            return False
        return self.pattern.fullmatch(name) is not None

    def old_enough(self, mtime_ns: int, now_ns: int) -> bool:
        return now_ns - mtime_ns >= self.minimum_age_ns

    def too_old(self, mtime_ns: int, now_ns: int) -> bool:
        return self.maximum_age_ns > 0 and now_ns - mtime_ns > self.maximum_age_ns
