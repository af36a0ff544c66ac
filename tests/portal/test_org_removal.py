"""An operator removes an organisation in the portal: what it holds is shown first, the
removal needs its box ticked, recordings under retention need a second box, calls in
progress refuse it, and then everything goes (rows, recording files local and in the
object store, export ZIPs, uploaded notices) with one entry in the platform's log.
Another organisation is untouched. The operator's pages speak the browser's language."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from argon2 import PasswordHasher

from portal.app import start_portal_at
from portal.services import PortalServices
from storage.database import Store
from storage.files import RecordingFiles
from storage.models import OrgScope
from storage.notices import NoticeFiles
from storage.objects import S3Objects, S3Settings
from storage.organisations import remove_organisation
from tests.portal.conftest import Client, Fixture, login, new_session, write_wav
from tests.storage.orgs import ORG

OPERATOR = ("ops", "ops-password-1")
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
async def operator(portal: Fixture) -> AsyncIterator[Client]:
    await portal.store.add_operator(*OPERATOR)
    async with new_session() as session:
        yield Client(session, await login(session, portal.url, *OPERATOR))


@dataclass
class Acme:
    """An organisation with one of everything, its recording under retention."""

    scope: OrgScope
    recording_file: Path
    notice_file: Path
    call_id: int


async def _acme(store: Store, storage_dir: Path, files: RecordingFiles | None = None) -> Acme:
    org = await store.add_organisation("acme", "Acme BV", "acme.example", language="nl")
    scope = org.scope
    user = await store.add_user(scope, "201", "Anna de Vries", password="sip-secret-1")
    await store.add_device(scope, "201", "anna-desk", password="desk-secret-1")
    await store.add_did(scope, "31201000", "31201099")
    await store.set_org_setting(scope, "feature_code", "*5")
    await store.add_admin(scope, "anna", "anna-password-1")
    now = time.time()
    call_id = await store.create_call(
        scope.id, caller_user_id=user.id, sip_call_id="acme@test", direction="outbound",
        caller_ext="201", callee_ext="0612345678", started_at=now - 60, answered_at=now - 55,
        ended_at=now - 5, disposition="answered",
    )  # fmt: skip
    new = (files or RecordingFiles(storage_dir)).new_recording("wav", now - 55)
    digest = write_wav(new.absolute, 1.0, 440.0)
    recording_id = await store.create_recording(
        call_id=call_id, path=new.relative, format="wav", channels=1, sample_rate=8000,
        started_at=now - 55, retention_days=90, owner_ext="201",
    )  # fmt: skip
    await store.finish_recording(
        recording_id, status="complete", ended_at=now - 5, duration_s=1.0, segments=[(0, 1)],
        sha256=digest, size=new.absolute.stat().st_size,
    )  # fmt: skip
    notice = NoticeFiles(storage_dir)
    notice_file = notice.path(scope.id, notice.save(scope.id, new.absolute.read_bytes()))
    await store.audit(scope, "admin:anna", "settings.change", "feature_code", detail="*5")
    return Acme(scope, new.absolute, notice_file, call_id)


async def _post(client: Client, url: str, **form: str) -> tuple[int, str]:
    async with client.session.post(
        url, data={"csrf_token": client.csrf, **form}, allow_redirects=False
    ) as response:
        return response.status, await response.text()


async def test_an_operator_removes_an_organisation_with_its_recordings(
    portal: Fixture, operator: Client
) -> None:
    store = portal.store
    acme = await _acme(store, portal.storage_dir)
    async with new_session() as session:
        anna = Client(session, await login(session, portal.url, "anna", "anna-password-1"))
        remove = f"{portal.url}/operator/orgs/acme/remove"

        # The page says what goes: one recording, still under retention.
        async with operator.session.get(remove) as response:
            page = await response.text()
        assert response.status == 200
        assert re.search(r'id="kept-count">1<', page) and 'name="purge_recordings"' in page

        # Unticked: nothing happens. Ticked without the recordings box: refused, saying why.
        status, _ = await _post(operator, remove)
        assert status == 422
        status, page = await _post(operator, remove, confirm="yes")
        assert status == 409 and "still under retention" in page
        # A call in progress refuses it even with both boxes ticked.
        await store.update_call(acme.call_id, ended_at=None)
        status, page = await _post(operator, remove, confirm="yes", purge_recordings="yes")
        assert status == 409 and "in progress" in page
        await store.update_call(acme.call_id, ended_at=time.time())
        assert await store.get_organisation("acme") is not None
        assert acme.recording_file.is_file() and acme.notice_file.is_file()

        # Both boxes: removed, with everything it held.
        status, _ = await _post(operator, remove, confirm="yes", purge_recordings="yes")
        assert status == 303
        assert await store.get_organisation("acme") is None
        assert not acme.recording_file.exists()
        assert not acme.notice_file.parent.exists()
        assert not [did for did in await store.all_dids() if did.org_id == acme.scope.id]
        assert await store.get_admin("anna") is None
        # Anna's session ended with her organisation.
        async with anna.session.get(f"{portal.url}/api/v1/me") as response:
            assert response.status == 401
    async with store.database.read() as session:
        for table in ("users", "devices", "calls", "recordings", "org_settings", "audit"):
            row = await session.one(f"SELECT COUNT(*) AS n FROM {table} WHERE org_id = ?",
                                    (acme.scope.id,))  # fmt: skip
            assert row is not None and row["n"] == 0, table
    # One entry in the platform's log says what went.
    (entry,) = [e for e in await store.list_audit(None, 50) if e.action == "org.remove"]
    assert (entry.actor, entry.object) == ("operator:ops", "org:acme")
    assert "users 1" in (entry.detail or "") and "recording files deleted 1" in (entry.detail or "")
    # The other organisation keeps its users, calls and files.
    assert len(await store.list_users(ORG)) == 3
    for recording_id in portal.recordings.values():
        listing = await store.get_visible_recording(ORG, recording_id, None)
        assert listing is not None
        assert (portal.storage_dir / listing.recording.path).is_file()
    async with operator.session.get(f"{portal.url}/operator") as response:
        page = await response.text()
    assert "Removed organisation Acme BV (acme)." in page and "/operator/orgs/acme" not in page


async def test_expired_recordings_need_no_second_box(portal: Fixture, operator: Client) -> None:
    acme = await _acme(portal.store, portal.storage_dir)
    async with portal.store.database.transaction() as session:
        await session.execute("UPDATE recordings SET expires_at = 1 WHERE org_id = ?",
                              (acme.scope.id,))  # fmt: skip
    remove = f"{portal.url}/operator/orgs/acme/remove"
    async with operator.session.get(remove) as response:
        assert 'name="purge_recordings"' not in await response.text()
    status, _ = await _post(operator, remove, confirm="yes")
    assert status == 303 and not acme.recording_file.exists()


async def test_only_an_operator_removes_an_organisation(portal: Fixture) -> None:
    from tests.portal.conftest import ADMIN

    await _acme(portal.store, portal.storage_dir)
    async with new_session() as session:
        admin = Client(session, await login(session, portal.url, *ADMIN))
        url = f"{portal.url}/operator/orgs/acme/remove"
        async with admin.session.get(url) as response:
            assert response.status == 403
        status, _ = await _post(admin, url, confirm="yes", purge_recordings="yes")
        assert status == 403
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(url, data={"confirm": "yes"}, allow_redirects=False) as response,
    ):
        assert response.status in (303, 403)
    assert await portal.store.get_organisation("acme") is not None


# -- the operator's language -------------------------------------------------------------


async def _operator_page(portal: Fixture, accept_language: str | None) -> tuple[str, str]:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    async with new_session() as session:
        await login(session, portal.url, *OPERATOR)
        async with session.get(f"{portal.url}/operator", headers=headers) as response:
            return response.headers["Content-Language"], await response.text()


async def test_operator_pages_speak_the_browsers_language_else_the_servers(
    portal: Fixture,
) -> None:
    await portal.store.add_operator(*OPERATOR)
    # The only organisation speaks Dutch: an operator belongs to none, so that is not it.
    await portal.store.update_organisation(ORG, language="nl")
    language, page = await _operator_page(portal, "nl-NL,nl;q=0.9,en;q=0.5")
    assert language == "nl" and "Organisaties" in page and 'lang="nl"' in page
    language, page = await _operator_page(portal, "en-GB,en;q=0.8")
    assert language == "en" and "Organisations" in page
    # No language callrec speaks, or none asked: the server's ([portal] language).
    for accept in ("de-DE,de;q=0.9", None):
        language, page = await _operator_page(portal, accept)
        assert language == "en" and "Organisations" in page, accept


async def test_an_operators_own_language_comes_before_the_browsers(
    portal: Fixture, operator: Client
) -> None:
    async def choose(language: str) -> int:
        async with operator.session.post(
            f"{portal.url}/operator/language",
            data={"csrf_token": operator.csrf, "language": language},
            allow_redirects=False,
        ) as response:
            return response.status

    assert await choose("nl") == 303
    language, page = await _operator_page(portal, "en-GB,en;q=0.8")
    assert language == "nl" and "Organisaties" in page
    assert '<option value="nl" lang="nl" selected>' in page
    assert await choose("xx") == 422
    # Back to the browser's.
    assert await choose("") == 303
    language, _ = await _operator_page(portal, "en-GB,en;q=0.8")
    assert language == "en"
    (entry, *_) = [
        e for e in await portal.store.list_audit(None, 10) if e.action == "language.change"
    ]
    assert (entry.actor, entry.object, entry.detail) == ("operator:ops", "operator:ops", "browser")


async def test_operator_pages_use_the_servers_language_when_it_is_dutch(tmp_path: Path) -> None:
    from callrec.policy import RecordingSettings

    store = await Store.open(tmp_path / "callrec.db", hasher=CHEAP)
    await store.add_operator(*OPERATOR)
    services = PortalServices(
        storage_dir=tmp_path,
        recordings_dir=tmp_path / "recordings",
        defaults=RecordingSettings(language="nl"),
    )
    handle = await start_portal_at(store, services, "127.0.0.1", 0)
    try:
        async with new_session() as session:
            await login(session, handle.url, *OPERATOR)
            async with session.get(f"{handle.url}/operator") as response:
                assert response.headers["Content-Language"] == "nl"
                assert "Organisaties" in await response.text()
    finally:
        await handle.stop()
        await store.close()


# -- with an object store -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    from testkit.s3 import running_s3, weed_missing

    if weed_missing() is not None:
        pytest.skip(str(weed_missing()))
    with running_s3() as server:
        yield server


async def test_the_recordings_in_the_object_store_are_deleted(tmp_path: Path, s3: object) -> None:
    from testkit.s3 import SeaweedS3

    assert isinstance(s3, SeaweedS3)
    settings = S3Settings.parse(
        f"s3://{s3.bucket}/{uuid.uuid4().hex}", endpoint=s3.endpoint, region="us-east-1",
        access_key=s3.access_key, secret_key=s3.secret_key,
    )  # fmt: skip
    storage_dir = tmp_path / "data"
    files = RecordingFiles(storage_dir, S3Objects(settings))
    store = await Store.open(storage_dir / "callrec.db", hasher=CHEAP)
    await store.add_operator(*OPERATOR)
    services = PortalServices(
        storage_dir=storage_dir, recordings_dir=storage_dir / "recordings", recording_files=files
    )
    handle = await start_portal_at(store, services, "127.0.0.1", 0)
    try:
        acme = await _acme(store, storage_dir, files)
        (recording,) = await store.organisation_recording_files(acme.scope)
        # Uploaded and verified, then the local copy deleted: only the object is left.
        relative = recording[1]
        info = await files.upload(relative, None)
        await files.delete_local(relative)
        assert info.size > 0 and await files.remote_info(relative) is not None
        async with new_session() as session:
            operator = Client(session, await login(session, handle.url, *OPERATOR))
            status, _ = await _post(
                operator, f"{handle.url}/operator/orgs/acme/remove",
                confirm="yes", purge_recordings="yes",
            )  # fmt: skip
        assert status == 303
        assert await files.remote_info(relative) is None
        assert await store.get_organisation("acme") is None
    finally:
        await handle.stop()
        await store.close()
        await files.close()


# -- on both backends -----------------------------------------------------------------------


async def test_removal_on_each_backend_leaves_no_row_and_no_file(
    store_location: str | Path, tmp_path: Path
) -> None:
    """The same removal on SQLite and on PostgreSQL (foreign keys enforced on both)."""
    from storage.errors import Conflict

    store = await Store.open(store_location, hasher=CHEAP)
    try:
        other = await store.add_organisation("other", "Other", "other.example")
        await store.add_user(other.scope, "201", "Stays Here")
        acme = await _acme(store, tmp_path / "data")
        files = RecordingFiles(tmp_path / "data")
        notices = NoticeFiles(tmp_path / "data")
        holdings = await store.organisation_holdings(acme.scope, time.time())
        assert (holdings.users, holdings.devices, holdings.dids, holdings.admins) == (1, 1, 1, 1)
        assert (holdings.calls, holdings.recordings, holdings.kept_recordings) == (1, 1, 1)
        with pytest.raises(Conflict) as refused:
            await remove_organisation(
                store, files, notices, acme.scope, now=time.time(), purge_recordings=False,
                actor="cli:test",
            )  # fmt: skip
        assert refused.value.field == "purge_recordings" and acme.recording_file.is_file()
        removed = await remove_organisation(
            store, files, notices, acme.scope, now=time.time(), purge_recordings=True,
            actor="cli:test",
        )  # fmt: skip
        assert removed == holdings
        assert not acme.recording_file.exists() and not acme.notice_file.exists()
        assert [org.slug for org in await store.list_organisations()] == ["default", "other"]
        async with store.database.read() as session:
            for table in ("users", "devices", "dids", "calls", "recordings", "admins", "audit"):
                row = await session.one(
                    f"SELECT COUNT(*) AS n FROM {table} WHERE org_id = ?", (acme.scope.id,)
                )
                assert row is not None and int(row["n"]) == 0, table
        assert [user.name for user in await store.list_users(other.scope)] == ["Stays Here"]
        (entry,) = [e for e in await store.list_audit(None, 10) if e.action == "org.remove"]
        assert entry.actor == "cli:test" and "recordings under retention 1" in (entry.detail or "")
    finally:
        await store.close()


async def test_an_object_store_that_is_down_stops_the_removal_and_a_retry_finishes_it(
    portal: Fixture,
) -> None:
    """A file that cannot be deleted keeps the organisation (503, nothing of its rows
    gone); once the store is back, removing it again finishes the job."""
    import importlib.util
    import socket

    from storage.errors import StorageUnavailable

    if importlib.util.find_spec("aiobotocore") is None:
        pytest.skip("the object store needs aiobotocore (callrec[cluster])")
    acme = await _acme(portal.store, portal.storage_dir)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = S3Settings.parse(
        "s3://recordings/x", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
        access_key="k", secret_key="s",
    )  # fmt: skip
    broken = RecordingFiles(portal.storage_dir, S3Objects(down, connect_timeout_s=0.5))
    notices = NoticeFiles(portal.storage_dir)
    try:
        with pytest.raises(StorageUnavailable) as failed:
            await remove_organisation(
                portal.store, broken, notices, acme.scope, now=time.time(),
                purge_recordings=True, actor="operator:ops",
            )  # fmt: skip
    finally:
        await broken.close()
    assert "could not be deleted" in failed.value.message and "/" not in failed.value.message
    assert await portal.store.get_organisation("acme") is not None
    assert len(await portal.store.list_users(acme.scope)) == 1
    removed = await remove_organisation(
        portal.store, RecordingFiles(portal.storage_dir), notices, acme.scope,
        now=time.time(), purge_recordings=True, actor="operator:ops",
    )  # fmt: skip
    assert removed.users == 1 and await portal.store.get_organisation("acme") is None


async def test_the_api_removes_an_organisation(portal: Fixture, operator: Client) -> None:
    acme = await _acme(portal.store, portal.storage_dir)
    url = f"{portal.url}/api/v1/orgs/acme"

    async def delete(**params: str) -> tuple[int, dict[str, object]]:
        async with operator.session.delete(url, params=params, headers=operator.headers) as r:
            return r.status, await r.json() if r.status != 204 else {}

    # Unconfirmed: nothing happens, whatever else is said.
    for unconfirmed in ({}, {"purge_recordings": "true"}, {"confirm": "default"}):
        status, body = await delete(**unconfirmed)
        assert (status, body["field"]) == (422, "confirm"), unconfirmed
    status, body = await delete(confirm="acme")
    assert (status, body["field"]) == (409, "purge_recordings")
    status, body = await delete(confirm="acme", purge_recordings="maybe")
    assert status == 422
    assert acme.recording_file.is_file()
    async with operator.session.delete(
        url, params={"purge_recordings": "true", "confirm": "acme"}, headers=operator.headers
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["organisation"] == "acme"
    assert (body["removed"]["users"], body["removed"]["kept_recordings"]) == (1, 1)
    assert not acme.recording_file.exists()
    assert (await delete(confirm="acme"))[0] == 404
