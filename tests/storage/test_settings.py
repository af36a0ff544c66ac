"""Organisation-wide settings as stored text."""

from __future__ import annotations

from storage.database import Store


async def test_settings(store: Store) -> None:
    assert await store.get_setting("feature_code") is None
    await store.set_setting("feature_code", "*1")
    await store.set_setting("feature_code", "*9")
    await store.set_setting("announcement", "beep")
    assert await store.get_setting("feature_code") == "*9"
    assert await store.all_settings() == {"announcement": "beep", "feature_code": "*9"}
