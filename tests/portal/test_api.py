"""The REST API over real HTTP on 127.0.0.1 against a real store and real WAV files."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
import soundfile

from portal.auth import LoginThrottle, SessionStore, user_identity
from tests.portal.conftest import ADMIN, Client, Fixture, login, new_session
from tests.storage.orgs import ORG

API = "/api/v1"


# -- access ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users"),
        ("GET", "/settings"),
        ("GET", "/calls"),
        ("GET", "/recordings"),
        ("GET", "/recordings/1"),
        ("GET", "/recordings/1/audio"),
        ("GET", "/recordings/1/download"),
        ("GET", "/exports"),
        ("GET", "/audit"),
        ("POST", "/users"),
        ("PUT", "/settings"),
    ],
)
async def test_api_needs_login(portal: Fixture, method: str, path: str) -> None:
    async with new_session() as session, session.request(method, portal.url + API + path) as r:
        assert r.status == 401
        body = await r.json()
        assert "error" in body and "Traceback" not in await r.text()


async def test_pages_redirect_to_login(portal: Fixture) -> None:
    async with (
        new_session() as session,
        session.get(portal.url + "/reports", allow_redirects=False) as r,
    ):
        assert r.status == 303
        assert r.headers["Location"].startswith("/login?next=")


async def test_session_cookie_is_httponly_and_samesite_strict(portal: Fixture) -> None:
    async with new_session() as session:
        async with session.get(portal.url + "/login") as r:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
        assert token is not None
        async with session.post(
            portal.url + "/login",
            data={"csrf_token": token.group(1), "name": ADMIN[0], "password": ADMIN[1]},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
            cookie = next(
                value
                for key, value in r.headers.items()
                if key == "Set-Cookie" and value.startswith("callrec_session=")
            )
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


async def test_login_without_csrf_token_is_refused(portal: Fixture) -> None:
    async with (
        new_session() as session,
        session.post(
            portal.url + "/login",
            data={"name": ADMIN[0], "password": ADMIN[1]},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 403


async def test_wrong_password_then_rate_limited(portal: Fixture) -> None:
    async with new_session() as session:
        statuses = []
        for _ in range(7):
            async with session.get(portal.url + "/login") as r:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
            assert token is not None
            async with session.post(
                portal.url + "/login",
                data={"csrf_token": token.group(1), "name": "201", "password": "wrong-one"},
                allow_redirects=False,
            ) as r:
                statuses.append(r.status)
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        # Even the right password is refused while throttled.
        async with session.get(portal.url + "/login") as r:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
        assert token is not None
        async with session.post(
            portal.url + "/login",
            data={"csrf_token": token.group(1), "name": "201", "password": "alice-pass-1"},
            allow_redirects=False,
        ) as r:
            assert r.status == 429
    # A failed login belongs to no organisation: the platform's log has it.
    actions = [e.action for e in await portal.store.list_audit(None, 50)]
    assert actions.count("login.failed") == 5 and "login.throttled" in actions


def test_login_throttle_window_slides() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("1.2.3.4", "root", t) == 0
        throttle.failed("1.2.3.4", "root", t)
    assert throttle.retry_after("1.2.3.4", "root", 3.0) == pytest.approx(57.0)
    assert throttle.retry_after("1.2.3.4", "other", 3.0) == 0
    assert throttle.retry_after("5.6.7.8", "root", 3.0) == 0
    assert throttle.retry_after("1.2.3.4", "root", 60.5) == 0


async def test_sessions_expire_when_idle(portal: Fixture) -> None:
    sessions = SessionStore(portal.store, idle_s=10)
    session = await sessions.create(user_identity(ORG, "201", "Alice Archer"), now=0.0)
    assert (await sessions.get(session.id, 9.0)) is not None
    assert (await sessions.get(session.id, 18.0)) is not None
    assert await sessions.get(session.id, 28.5) is None


async def test_api_write_with_cookie_needs_csrf_header(portal: Fixture, admin: Client) -> None:
    async with admin.session.put(portal.url + API + "/settings", json={"feature_code": "*5"}) as r:
        assert r.status == 403
    async with admin.session.put(
        portal.url + API + "/settings", json={"feature_code": "*5"}, headers=admin.headers
    ) as r:
        assert r.status == 200
        assert (await r.json())["feature_code"] == "*5"


async def test_bearer_token(portal: Fixture, admin: Client, alice: Client) -> None:
    async with alice.session.post(
        portal.url + API + "/tokens", json={"name": "ci"}, headers=alice.headers
    ) as r:
        assert r.status == 403
    async with admin.session.post(
        portal.url + API + "/tokens", json={"name": "ci"}, headers=admin.headers
    ) as r:
        assert r.status == 201
        created = await r.json()
    token = created["token"]
    async with new_session() as session:
        bearer = {"Authorization": f"Bearer {token}"}
        async with session.get(portal.url + API + "/users", headers=bearer) as r:
            assert r.status == 200
            assert [u["extension"] for u in (await r.json())["items"]] == ["201", "202", "203"]
        # Bearer writes need no CSRF header.
        async with session.put(
            portal.url + API + "/users/203/mode", json={"mode": "always"}, headers=bearer
        ) as r:
            assert r.status == 200
        async with session.get(
            portal.url + API + "/users", headers={"Authorization": f"Bearer {token}x"}
        ) as r:
            assert r.status == 401
        async with admin.session.delete(
            portal.url + API + f"/tokens/{created['id']}", headers=admin.headers
        ) as r:
            assert r.status == 204
        async with session.get(portal.url + API + "/users", headers=bearer) as r:
            assert r.status == 401
    # Only the hash is stored.
    async with portal.store.database.read() as session:
        rows = await session.all("SELECT token_sha256 FROM api_tokens")
    assert [row[0] for row in rows] == [hashlib.sha256(token.encode()).hexdigest()]


async def test_user_cannot_administer(portal: Fixture, alice: Client) -> None:
    for method, path, body in [
        ("POST", "/users", {"extension": "204", "name": "Dan"}),
        ("PUT", "/users/201/mode", {"mode": "never"}),
        ("DELETE", "/users/202/recording", None),
        ("PUT", "/settings", {"retention_days": 200}),
        ("POST", "/exports", {"month": "2024-05"}),
        ("GET", "/audit", None),
        ("GET", "/exports", None),
    ]:
        async with alice.session.request(
            method, portal.url + API + path, json=body, headers=alice.headers
        ) as r:
            assert r.status == 403, (method, path)
    user = await portal.store.get_user(ORG, "201")
    assert user is not None and user.recording_mode == "always"


# -- users and settings --------------------------------------------------------------------


async def test_users_add_mode_remove_devices(portal: Fixture, admin: Client) -> None:
    url = portal.url + API
    async with admin.session.post(
        url + "/users",
        json={"extension": "204", "name": "Dan Dale", "portal_password": "dan-pass-44"},
        headers=admin.headers,
    ) as r:
        assert r.status == 201
        assert (await r.json())["recording_mode"] == "on-demand"
    async with admin.session.put(
        url + "/users/204/mode", json={"mode": "always"}, headers=admin.headers
    ) as r:
        assert (await r.json())["recording_mode"] == "always"
    async with admin.session.post(
        url + "/users/204/devices", json={"uri": "sip:dan-desk@10.0.0.9"}, headers=admin.headers
    ) as r:
        assert r.status == 201
    async with admin.session.get(url + "/users/204/devices") as r:
        assert [d["uri"] for d in (await r.json())["items"]] == ["sip:dan-desk@10.0.0.9"]
    async with admin.session.delete(url + "/users/201/recording", headers=admin.headers) as r:
        assert r.status == 200
        assert (await r.json())["recording_mode"] == "never"
    # Removing from recording keeps the recordings.
    assert await portal.store.get_recording(ORG, portal.recordings["alice-bob"]) is not None
    async with admin.session.get(url + f"/recordings/{portal.recordings['alice-bob']}") as r:
        assert r.status == 200
    # The new user can log in with the portal password.
    async with new_session() as session:
        await login(session, portal.url, "204", "dan-pass-44")
    changes = [
        (e.action, e.object, e.detail)
        for e in await portal.store.list_audit(ORG, 50)
        if e.action == "mode.change"
    ]
    assert ("mode.change", "user:201", "always -> never") in changes
    assert ("mode.change", "user:204", "on-demand -> always") in changes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No Extension"}, "extension"),
        ({"extension": "2x", "name": "Bad"}, "extension"),
        ({"extension": "205"}, "name"),
        ({"extension": "205", "name": "Eve", "mode": "sometimes"}, "mode"),
        ({"extension": "205", "name": "Eve", "email": "not-an-email"}, "email"),
        ({"extension": "205", "name": "Eve", "devices": "sip:x@y"}, "devices"),
        ({"extension": "205", "name": "Eve", "portal_password": "short"}, "portal_password"),
    ],
)
async def test_user_validation_names_the_field(
    portal: Fixture, admin: Client, body: dict[str, object], field: str
) -> None:
    async with admin.session.post(
        portal.url + API + "/users", json=body, headers=admin.headers
    ) as r:
        assert r.status == 422
        answer = await r.json()
    assert answer["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"feature_code": "*12"}, "feature_code"),
        ({"feature_code": "#1"}, "feature_code"),
        ({"feature_code": "*"}, "feature_code"),
        ({"retention_days": 29}, "retention_days"),
        ({"retention_days": 366}, "retention_days"),
        ({"retention_days": "ninety"}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"announcement": "loud"}, "announcement"),
        ({"channels": "quad"}, "channels"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_settings_validation(
    portal: Fixture, admin: Client, body: dict[str, object], field: str
) -> None:
    async with admin.session.patch(
        portal.url + API + "/settings", json=body, headers=admin.headers
    ) as r:
        assert r.status == 422
        assert (await r.json())["field"] == field
    assert await portal.store.org_settings(ORG) == {}


async def test_settings_round_trip_and_audit(portal: Fixture, admin: Client) -> None:
    new = {
        "feature_code": "*7",
        "retention_days": 180,
        "announcement": "beep",
        "channels": "stereo",
    }
    async with admin.session.put(
        portal.url + API + "/settings", json=new, headers=admin.headers
    ) as r:
        assert r.status == 200
        answer = await r.json()
    assert {k: answer[k] for k in new} == new
    assert "new recordings only" in answer["note"]
    stored = await portal.store.org_settings(ORG)
    assert stored["retention_days"] == "180" and stored["feature_code"] == "*7"
    assert any(e.action == "settings.change" for e in await portal.store.list_audit(ORG, 20))


# -- calls ---------------------------------------------------------------------------------


async def test_calls_filters_and_paging(portal: Fixture, admin: Client) -> None:
    url = portal.url + API + "/calls"
    async with admin.session.get(url) as r:
        page = await r.json()
    assert page["total"] == 3
    assert [c["id"] for c in page["items"]] == [
        portal.calls["bob-carol"],
        portal.calls["carol-out"],
        portal.calls["alice-bob"],
    ]
    async with admin.session.get(url, params={"recorded_only": "true"}) as r:
        assert {c["id"] for c in (await r.json())["items"]} == {
            portal.calls["alice-bob"],
            portal.calls["carol-out"],
        }
    async with admin.session.get(url, params={"extension": "203"}) as r:
        assert (await r.json())["total"] == 2
    async with admin.session.get(url, params={"from": "2024-05-02", "to": "2024-05-02"}) as r:
        assert [c["id"] for c in (await r.json())["items"]] == [portal.calls["carol-out"]]
    async with admin.session.get(url, params={"page": "2", "page_size": "2"}) as r:
        second = await r.json()
    assert second["total"] == 3 and [c["id"] for c in second["items"]] == [
        portal.calls["alice-bob"]
    ]
    recorded = next(c for c in page["items"] if c["id"] == portal.calls["alice-bob"])
    assert recorded["caller"] == {"extension": "201", "name": "Alice Archer"}
    assert recorded["duration_s"] == pytest.approx(3.0)
    assert recorded["recordings"][0]["audio_url"].endswith("/audio")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-13-01"}, "to"),
        ({"from": "2024-05-03", "to": "2024-05-01"}, "to"),
        ({"extension": "abc"}, "extension"),
        ({"recorded_only": "maybe"}, "recorded_only"),
        ({"page": "0"}, "page"),
        ({"page_size": "1000"}, "page_size"),
    ],
)
async def test_calls_filter_validation(
    portal: Fixture, admin: Client, params: dict[str, str], field: str
) -> None:
    async with admin.session.get(portal.url + API + "/calls", params=params) as r:
        assert r.status == 422
        assert (await r.json())["field"] == field


# -- recordings ----------------------------------------------------------------------------


async def test_recording_metadata(portal: Fixture, admin: Client) -> None:
    recording_id = portal.recordings["alice-bob"]
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}") as r:
        data = await r.json()
    assert data["sha256"] == portal.sha256[recording_id]
    assert data["media_type"] == "audio/wav" and data["status"] == "complete"
    assert data["call"]["callee"] == {"extension": "202", "name": "Bob Baker"}
    async with admin.session.get(portal.url + API + "/recordings") as r:
        assert (await r.json())["total"] == 2


async def test_audio_whole_and_ranges(portal: Fixture, admin: Client) -> None:
    recording_id = portal.recordings["alice-bob"]
    path = portal.storage_dir / "recordings/2024/05/01/alice-bob.wav"
    content = path.read_bytes()
    url = portal.url + API + f"/recordings/{recording_id}/audio"
    async with admin.session.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "audio/wav"
        assert r.headers["Accept-Ranges"] == "bytes"
        whole = await r.read()
    assert whole == content
    data, rate = soundfile.read(io.BytesIO(whole))
    assert rate == 8000 and len(data) == 24000
    async with admin.session.get(url, headers={"Range": "bytes=100-199"}) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
        assert await r.read() == content[100:200]
    async with admin.session.get(url, headers={"Range": "bytes=-50"}) as r:
        assert r.status == 206
        assert await r.read() == content[-50:]
    async with admin.session.get(url, headers={"Range": f"bytes={len(content) + 10}-"}) as r:
        assert r.status == 416
    plays = [e for e in await portal.store.list_audit(ORG, 50) if e.action == "recording.play"]
    # The whole read is audited; the seeks in the middle of the file are not.
    assert len(plays) == 1 and plays[0].object == f"recording:{recording_id}"
    assert plays[0].address == "127.0.0.1" and plays[0].actor == "admin:root"


async def test_flac_content_type(portal: Fixture, admin: Client) -> None:
    from tests.portal.conftest import write_wav

    call_id = await portal.store.create_call(
        ORG.id,
        sip_call_id="flac@test",
        direction="inbound",
        caller_ext="0611",
        callee_ext="202",
        started_at=1714564800.0,
    )
    relative = "recordings/2024/05/01/flac-one.flac"
    write_wav(portal.storage_dir / relative, 1.0, 300.0, subtype="PCM_16")
    recording_id = await portal.store.create_recording(
        call_id=call_id,
        path=relative,
        format="flac",
        channels=1,
        sample_rate=8000,
        started_at=1714564800.0,
        retention_days=90,
        owner_ext="202",
    )
    await portal.store.finish_recording(recording_id, status="complete", ended_at=1714564801.0)
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}/audio") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/flac"
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}/download") as r:
        assert r.headers["Content-Disposition"].endswith('.flac"')


async def test_download_attachment_name_and_bytes(portal: Fixture, admin: Client) -> None:
    recording_id = portal.recordings["alice-bob"]
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}/download") as r:
        assert r.status == 200
        disposition = r.headers["Content-Disposition"]
        body = await r.read()
    # The same name as the recording's entry in a month's export ZIP.
    assert disposition == (
        f'attachment; filename="2024-05-01_120003_201-Alice-Archer_to_202-Bob-Baker'
        f'_{recording_id}.wav"'
    )
    assert hashlib.sha256(body).hexdigest() == portal.sha256[recording_id]
    assert any(e.action == "recording.download" for e in await portal.store.list_audit(ORG, 20))


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "POST"])
@pytest.mark.parametrize("suffix", ["", "/audio", "/download"])
async def test_recordings_cannot_be_deleted(
    portal: Fixture, admin: Client, method: str, suffix: str
) -> None:
    recording_id = portal.recordings["alice-bob"]
    async with admin.session.request(
        method, portal.url + API + f"/recordings/{recording_id}{suffix}", headers=admin.headers
    ) as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
        assert "retention" in (await r.json())["error"]
    assert (portal.storage_dir / "recordings/2024/05/01/alice-bob.wav").is_file()
    assert await portal.store.get_recording(ORG, recording_id) is not None


@pytest.mark.parametrize(
    "path",
    [
        "/recordings/999999",
        "/recordings/999999/audio",
        "/recordings/999999/download",
        "/recordings/99999999999999999999999",
        "/recordings/abc",
        "/calls/424242",
        "/exports/77",
        "/users/999",
        "/no-such-route",
    ],
)
async def test_unknown_ids_are_404_json(portal: Fixture, admin: Client, path: str) -> None:
    async with admin.session.get(portal.url + API + path) as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/json")
        assert "error" in await r.json()


async def test_missing_and_purged_files(portal: Fixture, admin: Client) -> None:
    recording_id = portal.recordings["carol-out"]
    (portal.storage_dir / "recordings/2024/05/01/carol-out.wav").unlink()
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}/audio") as r:
        assert r.status == 404
    async with portal.store.database.transaction() as session:
        await session.execute(
            "UPDATE recordings SET status = 'purged', purged_at = 1 WHERE id = ?",
            (recording_id,),
        )
    async with admin.session.get(portal.url + API + f"/recordings/{recording_id}/download") as r:
        assert r.status == 410


async def test_bad_json_never_gives_a_traceback(portal: Fixture, admin: Client) -> None:
    async with admin.session.post(
        portal.url + API + "/users",
        data=b"{not json",
        headers={**admin.headers, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        text = await r.text()
    assert "Traceback" not in text and "error" in text
    async with admin.session.post(
        portal.url + API + "/users", json=[1, 2], headers=admin.headers
    ) as r:
        assert r.status == 422 and (await r.json())["field"] == "body"


# -- exports and OpenAPI --------------------------------------------------------------------


async def test_exports_refused_below_180_days_then_ordered(portal: Fixture, admin: Client) -> None:
    url = portal.url + API + "/exports"
    async with admin.session.post(url, json={"month": "2024-05"}, headers=admin.headers) as r:
        assert r.status == 409
        assert "180 days" in (await r.json())["error"]
    assert portal.exports == []
    await portal.store.set_org_setting(ORG, "retention_days", "180")
    # Long enough now, but the organisation has not switched bulk download on.
    async with admin.session.post(url, json={"month": "2024-05"}, headers=admin.headers) as r:
        assert r.status == 409 and (await r.json())["field"] == "bulk_download"
    await portal.store.set_org_setting(ORG, "bulk_download", "on")
    async with admin.session.post(url, json={"month": "2024-5"}, headers=admin.headers) as r:
        assert r.status == 422 and (await r.json())["field"] == "month"
    async with admin.session.post(url, json={"month": "2024-05"}, headers=admin.headers) as r:
        assert r.status == 202
        export = await r.json()
    assert portal.exports == [("2024-05", "admin:root")]
    async with admin.session.get(f"{url}/{export['id']}") as r:
        assert (await r.json())["status"] == "queued"
    async with admin.session.get(url) as r:
        assert [e["month"] for e in (await r.json())["items"]] == ["2024-05"]


async def test_openapi_describes_the_routes(portal: Fixture) -> None:
    async with new_session() as session, session.get(portal.url + API + "/openapi.json") as r:
        assert r.status == 200
        schema = await r.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for route in (
        "/api/v1/users",
        "/api/v1/users/{extension}/mode",
        "/api/v1/settings",
        "/api/v1/calls",
        "/api/v1/recordings/{id}",
        "/api/v1/recordings/{id}/audio",
        "/api/v1/recordings/{id}/download",
        "/api/v1/exports",
        "/api/v1/exports/{id}",
    ):
        assert route in paths, route
    assert "206" in paths["/api/v1/recordings/{id}/audio"]["get"]["responses"]
    assert "405" in paths["/api/v1/recordings/{id}"]["delete"]["responses"]
    # Every $ref points at a defined schema.
    text = str(schema)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schema["components"]["schemas"], name
    # Every route of the app under /api/v1 is described.
    described = {re.sub(r"\{[^}]+\}", "{}", p) for p in paths}
    for resource in portal.portal.app.router.resources():
        route = resource.canonical
        if route.startswith(API) and not route.endswith("openapi.json"):
            assert re.sub(r"\{[^}]+\}", "{}", route) in described, route


# -- started from the config, as `callrec serve` does --------------------------------------


async def test_start_portal_from_config_and_signed_export_link(tmp_path: Path) -> None:
    import socket
    import time
    import zipfile

    from callrec.config import load_config
    from callrec.services import export
    from portal.app import start_portal
    from storage.database import Store

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_path = tmp_path / "callrec.toml"
    config_path.write_text(
        f'[storage]\ndir = "{tmp_path / "data"}"\n[portal]\nlisten = "127.0.0.1:{port}"\n'
    )
    config = load_config(config_path)
    store = await Store.open(config.storage.db_path)
    handle = await start_portal(config, store)
    try:
        assert handle.url == f"http://127.0.0.1:{port}"
        zip_path = config.storage.dir / "exports" / "1-2024-05.zip"
        zip_path.parent.mkdir(parents=True)
        with zipfile.ZipFile(zip_path, "w") as archive:
            archive.writestr("manifest.csv", "file,sha256\n")
        export_id = await store.create_export(ORG, "2024-05", "admin:root", time.time())
        await store.update_export(
            export_id, "ready", path="exports/1-2024-05.zip", finished_at=time.time()
        )
        secret = await export.portal_secret(store, config)
        good = export.sign_download(secret, ORG.id, export_id, time.time() + 600)
        expired = export.sign_download(secret, ORG.id, export_id, time.time() - 1)
        forged = export.sign_download(b"not the secret", ORG.id, export_id, time.time() + 600)
        other_org = export.sign_download(secret, ORG.id + 1, export_id, time.time() + 600)
        await store.add_admin(ORG, "root", "root-password-1")
        async with new_session() as session:
            # Without a login the link leads to the login page, not to the ZIP.
            async with session.get(
                f"{handle.url}/exports/download", params={"token": good}, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login?")
            await login(session, handle.url, "root", "root-password-1")
            async with session.get(f"{handle.url}/exports/download", params={"token": good}) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/zip"
                assert await r.read() == zip_path.read_bytes()
            for token in (expired, forged, other_org, good[:-2], "", "../../callrec.db"):
                async with session.get(
                    f"{handle.url}/exports/download", params={"token": token}
                ) as r:
                    assert r.status == 403, token
                    assert b"PK" not in await r.read()
        actions = [e.action for e in await store.list_audit(ORG, 20)]
        assert actions.count("export.download") == 1
    finally:
        await handle.stop()
        await store.close()


async def test_settings_form_keeps_an_unmoved_odd_retention(portal: Fixture, admin: Client) -> None:
    """200 days (set through the API) survives saving the form with the slider untouched;
    moving the slider to its first stop gives 30 days."""
    await portal.store.set_org_setting(ORG, "retention_days", "200")
    form = {
        "csrf_token": admin.csrf,
        "feature_code": "*3",
        "retention_position": "91",
        "retention_current": "200",
        "announcement": "none",
        "channels": "mono",
    }
    async with admin.session.post(portal.url + "/settings", data=form) as r:
        assert r.status == 200 and "Settings saved" in await r.text()
    stored = await portal.store.org_settings(ORG)
    assert stored["retention_days"] == "200" and stored["feature_code"] == "*3"
    async with admin.session.post(
        portal.url + "/settings", data={**form, "retention_position": "0"}
    ) as r:
        assert r.status == 200
    assert (await portal.store.org_settings(ORG))["retention_days"] == "30"
    async with admin.session.post(
        portal.url + "/settings", data={**form, "csrf_token": "forged"}
    ) as r:
        assert r.status == 403
    async with admin.session.post(
        portal.url + "/settings", data={**form, "feature_code": "1*", "retention_position": "99"}
    ) as r:
        assert r.status == 422
        page = await r.text()
    assert "the feature code must be * followed by one digit" in page
    assert "pick a retention on the slider" in page
    assert (await portal.store.org_settings(ORG))["feature_code"] == "*3"
