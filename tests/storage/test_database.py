"""The metadata store against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import MIGRATIONS, StorageError, Store, device_username
from storage.models import format_timestamp
from storage.passwords import ha1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "db" / "callrec.db")
    yield opened
    await opened.close()


# -- schema -------------------------------------------------------------------------


async def test_open_creates_folders_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "callrec.db"
    store = await Store.open(path)
    await store.close()
    assert path.is_file()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        versions = [row[0] for row in raw.execute("SELECT version FROM schema_version")]
    assert {"users", "devices", "registrations", "calls", "settings"} <= tables
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_reopen_keeps_data_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    store = await Store.open(path)
    await store.add_user("101", "Alice")
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        user = await store.get_user("101")
        assert user is not None and user.name == "Alice"
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callrec.db"
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO schema_version VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StorageError, match="newer"):
        await Store.open(path)


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(StorageError, match="unknown user id 999"):
        await store.upsert_binding(
            999, "sip:x@127.0.0.1", "127.0.0.1:5062;transport=udp", "c", 1, 9e9
        )


# -- users and devices ----------------------------------------------------------------


async def test_add_and_get_user_stores_only_ha1(store: Store, tmp_path: Path) -> None:
    user = await store.add_user(
        "101", "Alice", email="alice@example.org", mode="always", password="s3cret"
    )
    assert (user.extension, user.name, user.email, user.recording_mode) == (
        "101",
        "Alice",
        "alice@example.org",
        "always",
    )
    assert user.ha1_md5 == ha1("101", "callrec", "s3cret", "MD5")
    assert user.ha1_sha256 == ha1("101", "callrec", "s3cret", "SHA-256")
    assert await store.get_user("101") == user
    assert await store.get_user_by_id(user.id) == user
    assert await store.get_user("102") is None
    raw_bytes = (tmp_path / "db" / "callrec.db").read_bytes()
    wal = tmp_path / "db" / "callrec.db-wal"
    if wal.exists():
        raw_bytes += wal.read_bytes()
    assert b"s3cret" not in raw_bytes


async def test_user_without_password(store: Store) -> None:
    user = await store.add_user("102", "Bob")
    assert not user.has_password
    assert user.recording_mode == "on-demand"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extension": "1", "name": "A"}, "invalid extension '1'"),
        ({"extension": "1234567890123456", "name": "A"}, "invalid extension"),
        ({"extension": "10a", "name": "A"}, "invalid extension"),
        ({"extension": "101", "name": "  "}, "invalid name"),
        ({"extension": "101", "name": "A", "mode": "sometimes"}, "invalid recording mode"),
        ({"extension": "101", "name": "A", "email": "nope"}, "invalid email"),
        ({"extension": "101", "name": "A", "password": ""}, "invalid password"),
        ({"extension": "101", "name": "A", "devices": ["http://x"]}, "invalid device URI"),
        ({"extension": "101", "name": "A", "devices": ["sip:"]}, "invalid device URI"),
    ],
)
async def test_add_user_validation(store: Store, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StorageError, match=message):
        await store.add_user(**kwargs)  # type: ignore[arg-type]
    assert await store.list_users() == []


async def test_duplicate_extension(store: Store) -> None:
    await store.add_user("101", "Alice")
    with pytest.raises(StorageError, match="user 101 already exists"):
        await store.add_user("101", "Other")
    assert [user.name for user in await store.list_users()] == ["Alice"]


async def test_device_usernames_map_to_one_user(store: Store) -> None:
    await store.add_user(
        "101", "Alice", password="pw", devices=["sip:alice@127.0.0.1", "sip:alice@127.0.0.2:5062"]
    )
    # another user cannot take alice's username, nor the extension 101
    with pytest.raises(StorageError, match="'alice' is already a device username of user 101"):
        await store.add_user("102", "Bob", devices=["sip:alice@127.0.0.3"])
    with pytest.raises(StorageError, match="'101' is the extension of user 101"):
        await store.add_user("102", "Bob", devices=["sip:101@127.0.0.3"])
    # the failed adds left nothing behind (rolled back)
    assert [user.extension for user in await store.list_users()] == ["101"]


async def test_extension_taken_as_device_username(store: Store) -> None:
    await store.add_user("101", "Alice", devices=["sip:103@127.0.0.9"])
    with pytest.raises(StorageError, match="'103' is already a device username of user 101"):
        await store.add_user("103", "Carol")


async def test_find_user_by_auth_username_and_credentials(store: Store) -> None:
    alice = await store.add_user(
        "101", "Alice", password="pw", devices=["sip:alice@127.0.0.1", "sip:101@127.0.0.2"]
    )
    await store.add_user("102", "Bob")
    assert await store.find_user_by_auth_username("101") == alice
    assert await store.find_user_by_auth_username("alice") == alice
    assert await store.find_user_by_auth_username("bob") is None
    by_device = await store.find_credentials("alice")
    assert by_device is not None
    assert by_device.ha1_md5 == ha1("alice", "callrec", "pw", "MD5")
    assert by_device.ha1_sha256 == ha1("alice", "callrec", "pw", "SHA-256")
    by_extension = await store.find_credentials("101")
    assert by_extension is not None and by_extension.ha1_md5 == ha1("101", "callrec", "pw")
    devices = await store.list_devices("101")
    assert [(d.uri, d.username) for d in devices] == [
        ("sip:alice@127.0.0.1", "alice"),
        ("sip:101@127.0.0.2", None),  # the extension itself authenticates
    ]


async def test_set_password_updates_user_and_devices(store: Store) -> None:
    await store.add_user("101", "Alice", password="old", devices=["sip:alice@127.0.0.1"])
    user = await store.set_password("101", "new", realm="office")
    assert user.realm == "office"
    assert user.ha1_md5 == ha1("101", "office", "new", "MD5")
    credentials = await store.find_credentials("alice")
    assert credentials is not None
    assert credentials.realm == "office"
    assert credentials.ha1_sha256 == ha1("alice", "office", "new", "SHA-256")
    with pytest.raises(StorageError, match="unknown extension 999"):
        await store.set_password("999", "x")


async def test_set_mode(store: Store) -> None:
    await store.add_user("101", "Alice")
    assert (await store.set_mode("101", "never")).recording_mode == "never"
    user = await store.get_user("101")
    assert user is not None and user.recording_mode == "never"
    with pytest.raises(StorageError, match="invalid recording mode"):
        await store.set_mode("101", "loud")
    with pytest.raises(StorageError, match="unknown extension 555"):
        await store.set_mode("555", "always")


async def test_remove_user_cascades_but_keeps_calls(store: Store) -> None:
    alice = await store.add_user("101", "Alice", devices=["sip:alice@127.0.0.1"])
    await store.upsert_binding(alice.id, "sip:alice@127.0.0.1:5062", "127.0.0.1:5062", "c1", 1, 9e9)
    call_id = await store.create_call(
        sip_call_id="x1",
        direction="outbound",
        caller_ext="101",
        caller_name="Alice",
        started_at=1000.0,
    )
    await store.remove_user("101")
    assert await store.get_user("101") is None
    assert await store.find_user_by_auth_username("alice") is None
    assert await store.bindings("101", now=0.0) == []
    call = await store.get_call(call_id)
    assert call is not None and (call.caller_ext, call.caller_name) == ("101", "Alice")
    with pytest.raises(StorageError, match="unknown extension 101"):
        await store.remove_user("101")
    # the username is free again
    await store.add_user("102", "Bob", devices=["sip:alice@127.0.0.5"])


async def test_list_users_sorted_by_extension(store: Store) -> None:
    for extension in ("200", "1000", "20"):
        await store.add_user(extension, f"user {extension}")
    assert [user.extension for user in await store.list_users()] == ["20", "200", "1000"]


async def test_concurrent_writes_from_one_process(store: Store) -> None:
    results = await asyncio.gather(
        *(store.add_user(str(100 + n % 10), f"n{n}") for n in range(30)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 20 and all(isinstance(e, StorageError) for e in errors)
    assert len(await store.list_users()) == 10


def test_device_username_parsing() -> None:
    assert device_username("sip:alice@example.org;transport=tcp") == "alice"
    assert device_username("SIPS:bob:pw@[::1]:5061") == "bob"
    assert device_username("sip:al%69ce@h") == "alice"
    assert device_username("sip:127.0.0.1:5062") is None
    with pytest.raises(StorageError):
        device_username("tel:+12345")


# -- registrations --------------------------------------------------------------------


async def test_bindings_upsert_expiry_and_removal(store: Store) -> None:
    alice = await store.add_user("101", "Alice")
    received = "127.0.0.1:5062;transport=udp"
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:5062", received, "c1", 1, 100.0, "101")
    await store.upsert_binding(alice.id, "sip:b@127.0.0.1:5064", received, "c2", 1, 200.0)
    # the same contact replaces (refresh with a new expiry and CSeq)
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:5062", received, "c1", 2, 300.0, "101")
    bindings = await store.bindings("101", now=150.0)
    assert sorted((b.contact, b.cseq, b.expires_at) for b in bindings) == [
        ("sip:a@127.0.0.1:5062", 2, 300.0),
        ("sip:b@127.0.0.1:5064", 1, 200.0),
    ]
    assert all(b.extension == "101" for b in bindings)
    assert [b.contact for b in await store.bindings("101", now=250.0)] == ["sip:a@127.0.0.1:5062"]
    assert await store.purge_expired_bindings(now=250.0) == 1
    assert await store.purge_expired_bindings(now=250.0) == 0
    assert await store.remove_binding(alice.id, "sip:a@127.0.0.1:5062")
    assert not await store.remove_binding(alice.id, "sip:a@127.0.0.1:5062")
    assert await store.bindings("101", now=0.0) == []


async def test_instance_replaces_old_contact_and_remove_all(store: Store) -> None:
    alice = await store.add_user("101", "Alice")
    bob = await store.add_user("102", "Bob")
    instance = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:1", "r", "c", 1, 500.0, instance=instance)
    await store.upsert_binding(alice.id, "sip:a@127.0.0.1:2", "r", "c", 2, 500.0, instance=instance)
    await store.upsert_binding(bob.id, "sip:b@127.0.0.1:3", "r", "d", 1, 500.0, user_agent="UA")
    assert [b.contact for b in await store.bindings("101", now=0.0)] == ["sip:a@127.0.0.1:2"]
    assert await store.remove_all_bindings(alice.id) == 1
    assert await store.bindings("101", now=0.0) == []
    (bob_binding,) = await store.bindings("102", now=0.0)
    assert bob_binding.user_agent == "UA"


# -- call records ---------------------------------------------------------------------


async def test_create_update_get_call(store: Store) -> None:
    call_id = await store.create_call(
        sip_call_id="abc@127.0.0.1", direction="inbound", callee_ext="101", started_at=1000.0
    )
    call = await store.get_call(call_id)
    assert call is not None
    assert (call.disposition, call.recorded, call.duration_s) == (None, False, None)
    await store.update_call(
        call_id,
        answered_at=1002.0,
        ended_at=1062.5,
        disposition="answered",
        sip_status=200,
        recorded=True,
    )
    call = await store.get_call(call_id)
    assert call is not None
    assert (call.disposition, call.sip_status, call.recorded) == ("answered", 200, True)
    assert call.duration_s == pytest.approx(60.5)
    assert await store.get_call(call_id + 1) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"direction": "inbound", "started_at": 1.0}, "missing call field"),
        ({"sip_call_id": "x", "direction": "sideways", "started_at": 1.0}, "direction"),
        ({"sip_call_id": "x", "direction": "inbound", "started_at": "noon"}, "started_at"),
        ({"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "id": 5}, "unknown"),
        (
            {"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "disposition": "ok"},
            "disposition",
        ),
        (
            {"sip_call_id": "x", "direction": "inbound", "started_at": 1.0, "sip_status": 42},
            "sip_status",
        ),
    ],
)
async def test_create_call_validation(
    store: Store, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(StorageError, match=message):
        await store.create_call(**fields)


async def test_update_call_rejects_unknown_fields_and_ids(store: Store) -> None:
    call_id = await store.create_call(sip_call_id="x", direction="inbound", started_at=1.0)
    with pytest.raises(StorageError, match=r"unknown call field.*bogus"):
        await store.update_call(call_id, bogus=1)
    with pytest.raises(StorageError, match="unknown call id"):
        await store.update_call(call_id + 100, disposition="busy")


async def test_list_calls_filters_and_order(store: Store) -> None:
    rows = [
        ("c1", "101", "900", 100.0),
        ("c2", "102", "101", 200.0),
        ("c3", "102", "900", 300.0),
        ("c4", "103", "104", 400.0),
    ]
    for sip_call_id, caller, callee, started in rows:
        await store.create_call(
            sip_call_id=sip_call_id,
            direction="outbound",
            caller_ext=caller,
            callee_ext=callee,
            started_at=started,
        )

    async def ids(**filters: object) -> list[str]:
        return [call.sip_call_id for call in await store.list_calls(**filters)]  # type: ignore[arg-type]

    assert await ids() == ["c4", "c3", "c2", "c1"]
    assert await ids(limit=2) == ["c4", "c3"]
    assert await ids(limit=2, offset=2) == ["c2", "c1"]
    assert await ids(since=200.0) == ["c4", "c3", "c2"]
    assert await ids(until=300.0) == ["c2", "c1"]
    assert await ids(since=150.0, until=350.0) == ["c3", "c2"]
    assert await ids(extension="101") == ["c2", "c1"]
    assert await ids(extension="102", since=250.0) == ["c3"]


# -- settings and helpers ---------------------------------------------------------------


async def test_settings(store: Store) -> None:
    assert await store.get_setting("feature_code") is None
    await store.set_setting("feature_code", "*1")
    await store.set_setting("feature_code", "*9")
    await store.set_setting("announcement", "beep")
    assert await store.get_setting("feature_code") == "*9"
    assert await store.all_settings() == {"announcement": "beep", "feature_code": "*9"}


def test_format_timestamp() -> None:
    assert format_timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert format_timestamp(None) is None


def test_ha1_known_value() -> None:
    # RFC 2617 §3.5 example user "Mufasa", realm "testrealm@host.com", password "Circle Of Life"
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
