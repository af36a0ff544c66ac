"""Users and devices: extensions, SIP credentials (HA1 only), portal passwords."""

from __future__ import annotations

import pytest

from storage.accounts import ha1
from storage.database import StorageError, Store, device_username
from storage.errors import Conflict, InvalidValue, NotFound
from tests.storage.backends import stored_bytes
from tests.storage.orgs import ORG


async def test_add_and_get_user_stores_only_ha1(store: Store) -> None:
    user = await store.add_user(
        ORG, "101", "Alice", email="alice@example.org", mode="always", password="s3cret"
    )
    assert (user.extension, user.name, user.email, user.recording_mode) == (
        "101",
        "Alice",
        "alice@example.org",
        "always",
    )
    assert user.ha1_md5 == ha1("101", "callrec", "s3cret", "MD5")
    assert user.ha1_sha256 == ha1("101", "callrec", "s3cret", "SHA-256")
    assert await store.get_user(ORG, "101") == user
    assert await store.get_user_by_id(ORG, user.id) == user
    assert await store.get_user(ORG, "102") is None
    stored = await stored_bytes(store)
    assert b"alice@example.org" in stored  # the dump holds the row
    assert b"s3cret" not in stored


async def test_user_without_password(store: Store) -> None:
    user = await store.add_user(ORG, "102", "Bob")
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
        await store.add_user(ORG, **kwargs)  # type: ignore[arg-type]
    assert await store.list_users(ORG) == []


async def test_duplicate_extension(store: Store) -> None:
    await store.add_user(ORG, "101", "Alice")
    with pytest.raises(StorageError, match="user 101 already exists"):
        await store.add_user(ORG, "101", "Other")
    assert [user.name for user in await store.list_users(ORG)] == ["Alice"]


async def test_device_usernames_map_to_one_user(store: Store) -> None:
    await store.add_user(
        ORG,
        "101",
        "Alice",
        password="pw",
        devices=["sip:alice@127.0.0.1", "sip:alice@127.0.0.2:5062"],
    )
    # another user cannot take alice's username, nor the extension 101
    with pytest.raises(StorageError, match="'alice' is already a device username of user 101"):
        await store.add_user(ORG, "102", "Bob", devices=["sip:alice@127.0.0.3"])
    with pytest.raises(StorageError, match="'101' is the extension of user 101"):
        await store.add_user(ORG, "102", "Bob", devices=["sip:101@127.0.0.3"])
    # the failed adds left nothing behind (rolled back)
    assert [user.extension for user in await store.list_users(ORG)] == ["101"]


async def test_extension_taken_as_device_username(store: Store) -> None:
    await store.add_user(ORG, "101", "Alice", devices=["sip:103@127.0.0.9"])
    with pytest.raises(StorageError, match="'103' is already a device username of user 101"):
        await store.add_user(ORG, "103", "Carol")


async def test_find_user_by_auth_username_and_credentials(store: Store) -> None:
    alice = await store.add_user(
        ORG, "101", "Alice", password="pw", devices=["sip:alice@127.0.0.1", "sip:101@127.0.0.2"]
    )
    await store.add_user(ORG, "102", "Bob")
    assert await store.find_user_by_auth_username(ORG, "101") == alice
    assert await store.find_user_by_auth_username(ORG, "alice") == alice
    assert await store.find_user_by_auth_username(ORG, "bob") is None
    by_device = await store.find_credentials(ORG, "alice")
    assert by_device is not None
    assert by_device.ha1_md5 == ha1("alice", "callrec", "pw", "MD5")
    assert by_device.ha1_sha256 == ha1("alice", "callrec", "pw", "SHA-256")
    by_extension = await store.find_credentials(ORG, "101")
    assert by_extension is not None and by_extension.ha1_md5 == ha1("101", "callrec", "pw")
    devices = await store.list_devices(ORG, "101")
    assert [(d.uri, d.username) for d in devices] == [
        ("sip:alice@127.0.0.1", "alice"),
        ("sip:101@127.0.0.2", None),  # the extension itself authenticates
    ]


async def test_set_password_updates_user_and_devices(store: Store) -> None:
    await store.add_user(ORG, "101", "Alice", password="old", devices=["sip:alice@127.0.0.1"])
    # The realm is the organisation's domain as it is when the password is set.
    await store.update_organisation(ORG, domain="office.example")
    user = await store.set_password(ORG, "101", "new")
    assert user.realm == "office.example"
    assert user.ha1_md5 == ha1("101", "office.example", "new", "MD5")
    credentials = await store.find_credentials(ORG, "alice")
    assert credentials is not None
    assert credentials.realm == "office.example"
    assert credentials.ha1_sha256 == ha1("alice", "office.example", "new", "SHA-256")
    with pytest.raises(StorageError, match="unknown extension 999"):
        await store.set_password(ORG, "999", "x")


async def test_set_mode(store: Store) -> None:
    await store.add_user(ORG, "101", "Alice")
    assert (await store.set_mode(ORG, "101", "never")).recording_mode == "never"
    user = await store.get_user(ORG, "101")
    assert user is not None and user.recording_mode == "never"
    with pytest.raises(StorageError, match="invalid recording mode"):
        await store.set_mode(ORG, "101", "loud")
    with pytest.raises(StorageError, match="unknown extension 555"):
        await store.set_mode(ORG, "555", "always")


async def test_remove_user_cascades_but_keeps_calls(store: Store) -> None:
    alice = await store.add_user(ORG, "101", "Alice", devices=["sip:alice@127.0.0.1"])
    await store.upsert_binding(alice.id, "sip:alice@127.0.0.1:5062", "127.0.0.1:5062", "c1", 1, 9e9)
    call_id = await store.create_call(
        ORG.id,
        sip_call_id="x1",
        direction="outbound",
        caller_ext="101",
        caller_name="Alice",
        started_at=1000.0,
    )
    await store.remove_user(ORG, "101")
    assert await store.get_user(ORG, "101") is None
    assert await store.find_user_by_auth_username(ORG, "alice") is None
    assert await store.bindings(ORG, "101", now=0.0) == []
    call = await store.get_call(ORG, call_id)
    assert call is not None and (call.caller_ext, call.caller_name) == ("101", "Alice")
    with pytest.raises(StorageError, match="unknown extension 101"):
        await store.remove_user(ORG, "101")
    # the username is free again
    await store.add_user(ORG, "102", "Bob", devices=["sip:alice@127.0.0.5"])


async def test_list_users_sorted_by_extension(store: Store) -> None:
    for extension in ("200", "1000", "20"):
        await store.add_user(ORG, extension, f"user {extension}")
    assert [user.extension for user in await store.list_users(ORG)] == ["20", "200", "1000"]


def test_device_username_parsing() -> None:
    assert device_username("sip:alice@example.org;transport=tcp") == "alice"
    assert device_username("SIPS:bob:pw@[::1]:5061") == "bob"
    assert device_username("sip:al%69ce@h") == "alice"
    assert device_username("sip:127.0.0.1:5062") is None
    with pytest.raises(StorageError):
        device_username("tel:+12345")


# -- typed errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"extension": "1", "name": "A"}, "extension"),
        ({"extension": "101", "name": "  "}, "name"),
        ({"extension": "101", "name": "A", "mode": "sometimes"}, "mode"),
        ({"extension": "101", "name": "A", "email": "nope"}, "email"),
        ({"extension": "101", "name": "A", "password": ""}, "password"),
        ({"extension": "101", "name": "A", "devices": ["http://x"]}, "devices"),
    ],
)
async def test_refused_values_name_their_field(
    store: Store, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidValue) as refused:
        await store.add_user(ORG, **kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert isinstance(refused.value, ValueError)


async def test_duplicates_conflict_and_unknowns_are_not_found(store: Store) -> None:
    await store.add_user(ORG, "101", "Alice", devices=["sip:alice@127.0.0.1"])
    with pytest.raises(Conflict) as duplicate:
        await store.add_user(ORG, "101", "Other")
    assert duplicate.value.field == "extension"
    await store.add_user(ORG, "102", "Bob")
    with pytest.raises(Conflict) as taken:
        await store.add_device(ORG, "102", "sip:alice@127.0.0.2")
    assert taken.value.field == "uri"
    with pytest.raises(Conflict, match="already belongs to user 101"):
        await store.add_device(ORG, "101", "sip:alice@127.0.0.1")
    with pytest.raises(InvalidValue) as bad_uri:
        await store.add_device(ORG, "102", "tel:+1234")
    assert bad_uri.value.field == "uri"
    for attempt in (
        store.set_mode(ORG, "999", "always"),
        store.set_password(ORG, "999", "pw"),
        store.remove_user(ORG, "999"),
        store.list_devices(ORG, "999"),
        store.add_device(ORG, "999", "sip:x@h"),
        store.set_portal_password(ORG, "999", "long enough"),
    ):
        with pytest.raises(NotFound, match="unknown extension 999"):
            await attempt


async def test_portal_password_is_an_argon2_hash_checked_by_the_one_hasher(
    store: Store,
) -> None:
    await store.add_user(ORG, "101", "Alice")
    with pytest.raises(InvalidValue) as short:
        await store.set_portal_password(ORG, "101", "short")
    assert short.value.field == "password"
    await store.set_portal_password(ORG, "101", "alice-pass-1")
    async with store.database.read() as session:
        row = await session.one("SELECT portal_password_hash FROM users WHERE extension = '101'")
    assert row is not None and str(row[0]).startswith("$argon2id$")
    user = await store.verify_user_password(ORG, "101", "alice-pass-1")
    assert user is not None and user.extension == "101"
    assert await store.verify_user_password(ORG, "101", "alice-pass-2") is None
    assert await store.verify_user_password(ORG, "999", "alice-pass-1") is None
    await store.add_user(ORG, "102", "Bob")  # no portal password at all
    assert await store.verify_user_password(ORG, "102", "") is None
