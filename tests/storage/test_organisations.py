"""Organisations in the store: their own extensions, usernames, settings, calls,
recordings, exports, audit and numbers; reads of one never return another's rows; and
the migration of a one-organisation database into the default organisation."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from storage.accounts import ha1
from storage.connection import MIGRATIONS
from storage.database import Store
from storage.errors import Conflict, InvalidValue, NotFound
from storage.models import OrgScope
from tests.storage.orgs import ORG


async def two_orgs(store: Store) -> tuple[OrgScope, OrgScope]:
    acme = await store.add_organisation("acme", "Acme", "Acme.Example", language="nl")
    beta = await store.add_organisation("beta", "Beta", "beta.example", timezone="UTC")
    return acme.scope, beta.scope


async def test_organisations_are_unique_by_slug_and_domain(store: Store) -> None:
    acme, _ = await two_orgs(store)
    found = await store.organisation(acme)
    assert (found.domain, found.language, found.timezone) == ("acme.example", "nl", None)
    assert (await store.organisation_by_domain("ACME.example")) == found
    with pytest.raises(Conflict) as taken:
        await store.add_organisation("acme", "Again", "other.example")
    assert taken.value.field == "slug"
    with pytest.raises(Conflict) as taken:
        await store.add_organisation("gamma", "Gamma", "acme.EXAMPLE")
    assert taken.value.field == "domain"
    for slug, domain, field in [
        ("Bad Slug", "ok.example", "slug"),
        ("ok", "not a domain", "domain"),
        ("ok", "sip:x@y", "domain"),
    ]:
        with pytest.raises(InvalidValue) as refused:
            await store.add_organisation(slug, "X", domain)
        assert refused.value.field == field
    with pytest.raises(InvalidValue) as refused:
        await store.add_organisation("ok", "X", "ok.example", timezone="Mars/Base")
    assert refused.value.field == "timezone"
    # A forged scope (right id, wrong slug) names nothing.
    with pytest.raises(NotFound):
        await store.list_users(OrgScope(acme.id, "beta")) or await store.org_settings(
            OrgScope(acme.id, "beta")
        )


async def test_org_scope_is_explicit_once_there_are_several(store: Store) -> None:
    assert await store.org_scope(None) == ORG
    await two_orgs(store)
    with pytest.raises(InvalidValue) as ambiguous:
        await store.org_scope(None)
    assert ambiguous.value.field == "org" and "acme" in ambiguous.value.message
    assert (await store.org_scope("beta")).slug == "beta"
    with pytest.raises(NotFound):
        await store.org_scope("nobody")


async def test_the_same_extension_and_username_in_two_organisations(store: Store) -> None:
    acme, beta = await two_orgs(store)
    a = await store.add_user(acme, "201", "Anna Acme", password="pw-a", devices=["sip:desk@x"])
    b = await store.add_user(beta, "201", "Bert Beta", password="pw-b", devices=["sip:desk@y"])
    assert a.id != b.id and (a.realm, b.realm) == ("acme.example", "beta.example")
    assert a.ha1_md5 == ha1("201", "acme.example", "pw-a")
    found = await store.find_credentials(beta, "desk")
    assert found is not None and found.user.name == "Bert Beta"
    assert [u.name for u in await store.list_users(acme)] == ["Anna Acme"]
    # Within one organisation a username still belongs to one user.
    with pytest.raises(Conflict):
        await store.add_user(acme, "202", "Other", devices=["sip:desk@z"])
    await store.remove_user(acme, "201")
    assert await store.get_user(acme, "201") is None
    assert (await store.get_user(beta, "201")) == b
    with pytest.raises(NotFound):
        await store.set_mode(acme, "201", "always")


async def test_calls_recordings_exports_audit_and_settings_stay_in_their_organisation(
    store: Store,
) -> None:
    acme, beta = await two_orgs(store)
    now = time.time()
    call_a = await store.create_call(
        acme.id, sip_call_id="a@x", direction="outbound", caller_ext="201", started_at=now
    )
    call_b = await store.create_call(
        beta.id, sip_call_id="b@x", direction="outbound", caller_ext="201", started_at=now
    )
    rec_a = await store.create_recording(
        call_id=call_a, path="recordings/a.wav", format="wav", channels=1, sample_rate=8000,
        started_at=now, retention_days=30, owner_ext="201",
    )  # fmt: skip
    export_a = await store.create_export(acme, "2024-05", "admin:a", now)
    await store.audit(acme, "admin:a", "settings.change")
    await store.set_org_settings(acme, {"feature_code": "*7", "language": "en"})

    assert [c.sip_call_id for c in await store.list_calls(beta)] == ["b@x"]
    assert await store.get_call(beta, call_a) is None
    assert await store.get_visible_call(beta, call_a, None) is None
    assert await store.get_recording(beta, rec_a) is None
    assert await store.get_visible_recording(beta, rec_a, None) is None
    assert await store.get_visible_recording(acme, rec_a, None) is not None
    assert (await store.recordings_page(
        beta, since=None, until=None, extension=None, scope_ext=None, limit=10, offset=0
    ))[1] == 0  # fmt: skip
    assert (await store.calls_page(beta, _all(), 10, 0))[1] == 1
    assert await store.get_export(beta, export_a) is None
    assert await store.list_exports(beta) == []
    assert await store.export_listings(beta, 0, now + 1) == []
    assert await store.list_audit(beta) == [] and await store.audit_total(acme) == 1
    assert await store.org_settings(beta) == {"timezone": "UTC"}
    assert await store.org_settings(acme) == {"feature_code": "*7", "language": "en"}
    assert (await store.all_org_settings())[beta.id] == {"timezone": "UTC"}
    # A recording is filed under its call's organisation, whatever the caller says.
    (listing,) = await store.list_recordings(acme)
    assert listing.call.id == call_a
    with pytest.raises(InvalidValue):
        await store.create_call(999, sip_call_id="z", direction="inbound", started_at=now)
    assert call_b


def _all() -> object:
    from storage.calls import CallQuery

    return CallQuery()


async def test_number_ranges_belong_to_one_organisation(store: Store) -> None:
    acme, beta = await two_orgs(store)
    await store.add_did(acme, "31201000", "31201099")
    single = await store.add_did(beta, "31201100", extension="201")
    with pytest.raises(Conflict):
        await store.add_did(beta, "31201050", "31201150")
    with pytest.raises(InvalidValue):
        await store.add_did(beta, "500", "49")
    with pytest.raises(InvalidValue):
        await store.add_did(beta, "abc")
    assert [d.first for d in await store.list_dids(acme)] == ["31201000"]
    assert single.target("31201100") == "201"
    with pytest.raises(NotFound):
        await store.remove_did(acme, single.id)  # another organisation's
    await store.remove_did(beta, single.id)
    assert await store.list_dids(beta) == []


async def test_admins_and_tokens_belong_to_their_organisation(store: Store) -> None:
    acme, beta = await two_orgs(store)
    admin = await store.add_admin(acme, "anna", "anna-password")
    operator = await store.add_operator("ops", "ops-password")
    assert (admin.org_id, admin.role, operator.org_id, operator.is_operator) == (
        acme.id, "admin", None, True,
    )  # fmt: skip
    verified = await store.verify_admin("anna", "anna-password")
    assert verified is not None and verified.org_id == acme.id
    token_id, _ = await store.create_api_token(acme, "ci", "admin:anna")
    assert [t.id for t in await store.list_api_tokens(acme)] == [token_id]
    assert await store.list_api_tokens(beta) == []
    assert not await store.revoke_api_token(beta, token_id)
    assert await store.revoke_api_token(acme, token_id)
    with pytest.raises(InvalidValue):
        await store.create_api_token(None, "x", "admin:anna", "admin")


def _version_5_database(path: Path) -> None:
    """A database as callrec made it before organisations (schema version 5)."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for version, statements in enumerate(MIGRATIONS[:5], start=1):
        for statement in statements:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    now = time.time()
    connection.executescript(
        f"""
        INSERT INTO users (id, extension, name, recording_mode, realm, ha1_md5, created_at)
            VALUES (1, '201', 'Alice', 'always', 'pbx.example', 'h', {now}),
                   (2, '202', 'Bob', 'never', 'pbx.example', NULL, {now});
        INSERT INTO devices (user_id, uri, username) VALUES (1, 'sip:desk@pbx', 'desk');
        INSERT INTO registrations (user_id, contact, received, call_id, cseq, expires_at,
            updated_at) VALUES (1, 'sip:201@10.0.0.1', '10.0.0.1:5060;transport=udp', 'c', 1,
            {now + 3600}, {now});
        INSERT INTO calls (id, sip_call_id, direction, caller_ext, started_at)
            VALUES (1, 'old@x', 'outbound', '201', {now});
        INSERT INTO recordings (call_id, path, format, channels, sample_rate, status,
            started_at, retention_days, expires_at)
            VALUES (1, 'recordings/old.wav', 'wav', 1, 8000, 'complete', {now}, 200, {now});
        INSERT INTO exports (month, requested_by, requested_at, status)
            VALUES ('2024-05', 'admin:root', {now}, 'ready');
        INSERT INTO audit (at, actor, action) VALUES ({now}, 'admin:root', 'login');
        INSERT INTO admins (name, password_hash, created_at) VALUES ('root', 'x', {now});
        INSERT INTO api_tokens (token_sha256, name, actor, role, created_at)
            VALUES ('t', 'ci', 'admin:root', 'admin', {now});
        INSERT INTO settings (key, value) VALUES ('retention_days', '200'),
            ('feature_code', '*4'), ('language', 'nl'), ('portal_secret', 'abc');
        """
    )
    connection.commit()
    connection.close()


async def test_a_one_organisation_database_migrates_into_the_default_organisation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "callrec.db"
    _version_5_database(path)
    store = await Store.open(path, default_domain="PBX.example")
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        (org,) = await store.list_organisations()
        assert (org.id, org.slug, org.domain, org.language) == (1, "default", "pbx.example", "nl")
        scope = org.scope
        assert [u.extension for u in await store.list_users(scope)] == ["201", "202"]
        credentials = await store.find_credentials(scope, "desk")
        assert credentials is not None and credentials.user.extension == "201"
        assert len(await store.bindings(scope, "201", time.time())) == 1
        assert [c.sip_call_id for c in await store.list_calls(scope)] == ["old@x"]
        (listing,) = await store.list_recordings(scope)
        assert listing.recording.retention_days == 200
        assert [e.month for e in await store.list_exports(scope)] == ["2024-05"]
        assert [e.action for e in await store.list_audit(scope)] == ["login"]
        admin = await store.get_admin("root")
        assert admin is not None and (admin.org_id, admin.role) == (1, "admin")
        assert len(await store.list_api_tokens(scope)) == 1
        # Settings moved to the organisation (bulk download on: it kept 180+ days); the
        # server's own key stayed the server's.
        assert await store.org_settings(scope) == {
            "retention_days": "200",
            "feature_code": "*4",
            "bulk_download": "on",
            "language": "nl",
        }
        assert await store.server_setting("portal_secret") == "abc"
        assert await store.server_setting("retention_days") is None
        # Extensions are now unique per organisation only.
        other = (await store.add_organisation("beta", "Beta", "beta.example")).scope
        await store.add_user(other, "201", "Another Alice")
        with pytest.raises(Conflict):
            await store.add_user(scope, "201", "Alice again")
    finally:
        await store.close()
    # Foreign keys are on again and nothing was cascaded away by the rebuild.
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 1
        assert check.execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 1
        assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        check.close()


async def test_without_a_configured_domain_the_users_realm_names_the_default(
    tmp_path: Path,
) -> None:
    path = tmp_path / "callrec.db"
    _version_5_database(path)
    store = await Store.open(path)
    try:
        (org,) = await store.list_organisations()
        assert org.domain == "pbx.example"
    finally:
        await store.close()
