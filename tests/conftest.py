import pytest

from pipeline.extract import Extractor
from pipeline.rules import load_rules


@pytest.fixture(scope="session")
def rules():
    return load_rules()


@pytest.fixture(scope="session")
def extractor(rules):
    return Extractor(rules=rules)


@pytest.fixture(scope="session")
def status(extractor):
    """status(text, label) -> the note-level status of `label` for `text` (None when empty)."""

    def _status(text: str, label: str):
        return extractor.extract(text).summary[label]

    return _status
