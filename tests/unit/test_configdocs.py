from pathlib import Path

from streamsend.config.docs import render
from streamsend.config.settings import DownloaderSettings, UploaderSettings, settings_fields

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m streamsend.config.docs > "
        "docs/configuration.md`"
    )


def test_every_property_is_documented() -> None:
    text = render()
    for cls in (UploaderSettings, DownloaderSettings):
        for _, s in settings_fields(cls):
            assert f"| `{s.name}` |" in text
