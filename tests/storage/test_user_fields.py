"""One kind of user in the store: the same fields whoever creates it, on demand by
default, a portal login in the same transaction, devices with their own username and
password, edits, and generated passwords that are never stored."""

from __future__ import annotations

import pytest

from callrec.policy import DEFAULT_RECORDING_MODE
from storage.accounts import GENERATED_PASSWORD_LENGTH, generate_password, ha1
from storage.database import Store
from storage.errors import Conflict, InvalidValue, NotFound
from tests.storage.orgs import ORG


async def test_a_new_user_is_on_demand_with_an_optional_portal_login(store: Store) -> None:
    user = await store.add_user(ORG, "201", "Alice", password="sip-1", portal_password="portal-1x")
    assert user.recording_mode == DEFAULT_RECORDING_MODE.value == "on-demand"
    assert user.portal_login and user.has_password
    assert await store.get_user(ORG, "201") == user
    assert await store.verify_user_password(ORG, "201", "portal-1x") is not None
    plain = await store.add_user(ORG, "202", "Bob")
    assert not plain.portal_login and not plain.has_password
    with pytest.raises(InvalidValue) as refused:
        await store.add_user(ORG, "203", "Carol", portal_password="short")
    assert refused.value.field == "portal_password"
    assert await store.get_user(ORG, "203") is None


async def test_edit_name_and_email(store: Store) -> None:
    await store.add_user(ORG, "201", "Alice", email="a@example.org")
    user = await store.update_user(ORG, "201", name="Alice Archer")
    assert (user.name, user.email) == ("Alice Archer", "a@example.org")
    user = await store.update_user(ORG, "201", email=None)
    assert user.email is None
    with pytest.raises(InvalidValue):
        await store.update_user(ORG, "201", email="not-an-address")
    with pytest.raises(NotFound):
        await store.update_user(ORG, "299", name="Nobody")


async def test_devices_have_their_own_username_and_password(store: Store) -> None:
    user = await store.add_user(ORG, "201", "Alice", password="sip-1")
    desk = await store.add_device(ORG, "201", "alice-desk", password="desk-1")
    assert desk.uri == f"sip:alice-desk@{user.realm}" and desk.username == "alice-desk"
    credentials = await store.find_credentials(ORG, "alice-desk")
    assert credentials is not None and credentials.user.id == user.id
    assert credentials.ha1_md5 == ha1("alice-desk", user.realm, "desk-1")
    desk = await store.set_device_password(ORG, "201", desk.id, "desk-2")
    assert desk.ha1_md5 == ha1("alice-desk", user.realm, "desk-2")
    # The user's own password is untouched by the device's.
    assert (await store.get_user(ORG, "201")).ha1_md5 == ha1("201", user.realm, "sip-1")  # type: ignore[union-attr]
    same = await store.add_device(ORG, "201", f"sip:201@{user.realm}")
    with pytest.raises(InvalidValue):  # signs in as the extension: no password of its own
        await store.set_device_password(ORG, "201", same.id, "x")
    await store.add_user(ORG, "202", "Bob")
    with pytest.raises(Conflict):
        await store.add_device(ORG, "202", "alice-desk")
    with pytest.raises(InvalidValue):
        await store.add_device(ORG, "202", "not a username")
    with pytest.raises(NotFound):  # Bob has no device of Alice's
        await store.remove_device(ORG, "202", desk.id)
    removed = await store.remove_device(ORG, "201", desk.id)
    assert removed.id == desk.id and await store.find_credentials(ORG, "alice-desk") is None


def test_generated_passwords_are_random_and_readable() -> None:
    made = {generate_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert len(password) == GENERATED_PASSWORD_LENGTH
        assert not set(password) & set("0O1lI")
