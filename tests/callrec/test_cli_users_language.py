"""The CLI makes the same user as the portal and the API (a portal login, devices with
their own password, generated passwords printed once), audits every change without the
password, and speaks Dutch or English: `--lang`, then the locale, then the language of
the organisation `--org` names, then the config's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from callrec.cli import CLI_CATALOGUES, language_from_environment
from storage.accounts import ha1
from storage.database import Store
from storage.models import AuditEntry, User
from tests.callrec.test_cli_storage import config_file as config_file
from tests.callrec.test_cli_storage import run
from tests.storage.orgs import ORG

ROOT = Path(__file__).resolve().parents[2]
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(autouse=True)
def no_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in LOCALE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def read_store(tmp_path: Path) -> tuple[dict[str, User], list[AuditEntry], dict[str, tuple]]:
    async def read() -> tuple[dict[str, User], list[AuditEntry], dict[str, tuple]]:
        store = await Store.open(tmp_path / "data" / "callrec.db")
        try:
            users = {u.extension: u for u in await store.list_users(ORG)}
            devices = {
                d.username or "": (d.id, d.ha1_md5)
                for u in users.values()
                for d in await store.list_devices(ORG, u.extension)
            }
            return users, await store.list_audit(ORG, 100), devices
        finally:
            await store.close()

    return asyncio.run(read())


def test_cli_user_has_every_field_and_every_change_is_audited(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    portal_file = tmp_path / "portal"
    portal_file.write_text("portal-secret-7\n")
    code, out, err = run(
        capsys, config_file, "users", "add", "301", "--name", "Ida Ink",
        "--generate-password", "--portal-password-file", str(portal_file),
    )  # fmt: skip
    assert code == 0, err
    generated = out.strip().rsplit(" ", 1)[-1]
    assert len(generated) == 16 and "shown once" in out
    users, _, _ = read_store(tmp_path)
    ida = users["301"]
    assert ida.recording_mode == "on-demand" and ida.portal_login
    assert ida.ha1_md5 == ha1("301", ida.realm, generated)

    device_file = tmp_path / "device"
    device_file.write_text("desk-secret-7\n")
    assert run(capsys, config_file, "devices", "add", "301", "ida-desk",
               "--password-file", str(device_file))[0] == 0  # fmt: skip
    _, _, devices = read_store(tmp_path)
    device_id, device_ha1 = devices["ida-desk"]
    assert device_ha1 == ha1("ida-desk", ida.realm, "desk-secret-7")
    code, out, _ = run(
        capsys, config_file, "devices", "set-password", "301", str(device_id),
        "--generate-password",
    )  # fmt: skip
    assert code == 0
    device_password = out.strip().rsplit(" ", 1)[-1]
    _, _, devices = read_store(tmp_path)
    assert devices["ida-desk"][1] == ha1("ida-desk", ida.realm, device_password)
    assert run(capsys, config_file, "users", "set", "301", "--email", "ida@example.org")[0] == 0
    assert run(capsys, config_file, "users", "remove-portal-login", "301")[0] == 0
    assert run(capsys, config_file, "devices", "remove", "301", str(device_id))[0] == 0

    users, audit, devices = read_store(tmp_path)
    assert users["301"].email == "ida@example.org" and not users["301"].portal_login
    assert "ida-desk" not in devices
    actions = [entry.action for entry in reversed(audit)]
    assert actions == [
        "user.add",
        "device.add",
        "device.password.set",
        "user.change",
        "portal_password.remove",
        "device.remove",
    ]
    assert all(entry.actor.startswith("cli") for entry in audit)
    secrets = (generated, "portal-secret-7", "desk-secret-7", device_password)
    for entry in audit:
        assert not any(secret in (entry.detail or "") for secret in secrets), entry
    assert audit[-1].detail == "mode on-demand, sip password generated, portal login"


def test_cli_speaks_dutch_when_asked(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, config_file, "users", "add", "301", "--name", "Ida", "--lang", "nl")
    assert (code, out) == (0, "gebruiker 301 (Ida) toegevoegd, modus on-demand\n")
    code, _, err = run(capsys, config_file, "users", "remove", "399", "--lang", "nl")
    assert code == 1 and err.startswith("callrec: fout: ")
    # From the locale...
    monkeypatch.setenv("LANG", "nl_NL.UTF-8")
    code, out, _ = run(capsys, config_file, "users", "set-mode", "301", "always")
    assert out == "gebruiker 301: modus always\n"
    # ... which --lang overrides.
    code, out, _ = run(capsys, config_file, "users", "set-mode", "301", "never", "--lang", "en")
    assert out == "user 301: mode never\n"


def test_an_organisations_language_applies_when_nobody_chose(
    capsys: pytest.CaptureFixture[str], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, config_file, "orgs", "add", "acme", "--name", "Acme",
               "--domain", "acme.example", "--language", "nl")[0] == 0  # fmt: skip
    assert run(capsys, config_file, "orgs", "add", "beta", "--name", "Beta",
               "--domain", "beta.example", "--language", "en")[0] == 0  # fmt: skip
    _, out, _ = run(capsys, config_file, "users", "add", "201", "--name", "An", "--org", "acme")
    assert out.startswith("gebruiker 201 (An) toegevoegd")
    _, out, _ = run(capsys, config_file, "users", "add", "201", "--name", "Bo", "--org", "beta")
    assert out.startswith("added user 201 (Bo)")
    # A locale that names a language callrec speaks comes first; "C" names none.
    monkeypatch.setenv("LC_ALL", "en_GB.UTF-8")
    _, out, _ = run(capsys, config_file, "users", "set-mode", "201", "always", "--org", "acme")
    assert out == "user 201: mode always\n"
    monkeypatch.setenv("LC_ALL", "C")
    _, out, _ = run(capsys, config_file, "users", "set-mode", "201", "never", "--org", "acme")
    assert out == "gebruiker 201: modus never\n"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"LANG": "nl_NL.UTF-8"}, "nl"),
        ({"LANG": "nl_BE@euro"}, "nl"),
        ({"LANG": "de_DE.UTF-8"}, None),
        ({"LANG": "C.UTF-8"}, None),
        ({"LC_MESSAGES": "en_US.UTF-8", "LANG": "nl_NL.UTF-8"}, "en"),
        ({"LC_ALL": "nl_NL", "LC_MESSAGES": "en_US"}, "nl"),
        ({"LANGUAGE": "de:nl", "LC_ALL": "en_US"}, "nl"),
        ({"LANGUAGE": "", "LANG": "nl"}, "nl"),
    ],
)
def test_language_from_environment(environ: dict[str, str], expected: str | None) -> None:
    assert language_from_environment(environ) == expected


def test_the_cli_catalogue_is_complete_and_compiled() -> None:
    po_path = CLI_CATALOGUES / "nl" / "LC_MESSAGES" / "cli.po"
    with po_path.open("rb") as handle:
        catalogue = read_po(handle, locale="nl")
    translated = {m.id: m.string for m in catalogue if m.id}
    marked = {
        message
        for _, message, _, _ in extract_from_file("python", ROOT / "callrec" / "cli.py")
        if isinstance(message, str)
    }
    assert marked and marked <= set(translated), sorted(marked - set(translated))
    assert all(translated[m] for m in marked), [m for m in marked if not translated[m]]
    with (po_path.with_suffix(".mo")).open("rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}
    assert {m: translated[m] for m in marked} == {m: compiled.get(m) for m in marked}
