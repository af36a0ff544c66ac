"""The typed storage errors: what each carries, and that the store raises the right one."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.database import Store
from storage.errors import (
    Conflict,
    EmptyDatabase,
    InvalidValue,
    NotFound,
    StorageError,
    StorageUnavailable,
)
from tests.storage.orgs import ORG


def test_every_error_is_a_storage_error_with_a_one_line_message() -> None:
    errors: list[StorageError] = [
        InvalidValue("extension", "invalid extension '1': expected 2 to 15 digits"),
        NotFound("unknown extension 999"),
        Conflict("user 101 already exists", "extension"),
        StorageUnavailable("the disk holding the database is full"),
        EmptyDatabase(Path("/srv/callrec/callrec.db")),
    ]
    for error in errors:
        assert isinstance(error, StorageError)
        assert str(error) == error.message and "\n" not in error.message
    invalid, not_found, conflict, unavailable, empty = errors
    assert invalid.field == "extension" and isinstance(invalid, ValueError)
    assert not_found.field is None
    assert conflict.field == "extension" and Conflict("x").field is None
    assert unavailable.field is None
    assert isinstance(empty, StorageUnavailable) and "/srv" not in empty.message


async def test_the_store_raises_the_type_that_fits(store: Store) -> None:
    call_id = await store.create_call(ORG.id, sip_call_id="x", direction="inbound", started_at=1.0)
    with pytest.raises(InvalidValue) as missing:
        await store.create_call(ORG.id, direction="inbound", started_at=1.0)
    assert missing.value.field == "sip_call_id"
    with pytest.raises(InvalidValue) as bogus:
        await store.update_call(call_id, bogus=1)
    assert bogus.value.field == "bogus"
    with pytest.raises(NotFound):
        await store.update_call(call_id + 1, disposition="busy")
    with pytest.raises(InvalidValue) as limit:
        await store.list_calls(ORG, limit=-1)
    assert limit.value.field == "limit"
    with pytest.raises(InvalidValue) as key:
        await store.set_org_setting(ORG, "", "x")
    assert key.value.field == "key"
    with pytest.raises(NotFound):
        await store.upsert_binding(999, "sip:x@127.0.0.1", "r", "c", 1, 9e9)
