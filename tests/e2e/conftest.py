from __future__ import annotations

from pathlib import Path

import pytest
from harness import Pipeline


@pytest.fixture
def pipeline(bootstrap_servers: str, unique_topic: str, tmp_path: Path) -> Pipeline:
    return Pipeline(bootstrap_servers, unique_topic, tmp_path)
