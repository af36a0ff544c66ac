"""Organisation-wide settings as stored text."""

from __future__ import annotations

from storage.database import Store
from tests.storage.orgs import ORG


async def test_settings(store: Store) -> None:
    assert await store.get_org_setting(ORG, "feature_code") is None
    await store.set_org_setting(ORG, "feature_code", "*1")
    await store.set_org_setting(ORG, "feature_code", "*9")
    await store.set_org_setting(ORG, "announcement", "beep")
    assert await store.get_org_setting(ORG, "feature_code") == "*9"
    assert await store.org_settings(ORG) == {"announcement": "beep", "feature_code": "*9"}
