from hypothesis import given
from hypothesis import strategies as st

from streamsend.upload.state import MemoryStateStore, SentRecord, version_of

SIZES = st.integers(0, 1 << 50)
MTIMES = st.integers(-(1 << 62), 1 << 62)


@given(SIZES, MTIMES, SIZES, MTIMES)
def test_version_is_equal_exactly_when_size_and_mtime_are(a: int, b: int, c: int, d: int) -> None:
    assert (version_of(a, b) == version_of(c, d)) == ((a, b) == (c, d))


def test_memory_store_loads_versions() -> None:
    store = MemoryStateStore()
    store.save("a/b.txt", SentRecord(10, -5, "ab" * 32, "cd" * 16))
    assert store.load() == {"a/b.txt": version_of(10, -5)}
