"""Row models and their rendering."""

from __future__ import annotations

from storage.models import format_timestamp


def test_format_timestamp() -> None:
    assert format_timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert format_timestamp(None) is None
