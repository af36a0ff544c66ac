"""`callrec orgs`, `callrec dids` and `--org`: the operator's commands, and commands
that must name their organisation once there are several."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.callrec.test_cli_storage import in_store, run


@pytest.fixture(autouse=True)
def english_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    # The config below says Dutch, which the CLI would speak without a locale choice.
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(
        f'[storage]\ndir = "{tmp_path / "data"}"\n[sip]\nrealm = "pbx.example"\n'
        '[portal]\nlanguage = "nl"\ntimezone = "Europe/Amsterdam"\n'
    )
    return path


def test_organisations_are_added_listed_and_changed(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    # One organisation: commands need no --org, and the default's domain is the realm.
    assert run(capsys, config_file, "users", "add", "201", "--name", "Dee")[0] == 0
    code, out, _ = run(capsys, config_file, "orgs", "list", "--json")
    (default,) = json.loads(out)
    assert (code, default["slug"], default["domain"]) == (0, "default", "pbx.example")

    code, out, err = run(
        capsys, config_file, "orgs", "add", "acme", "--name", "Acme", "--domain", "acme.example"
    )
    assert (code, err) == (0, "") and "domain acme.example" in out
    acme = next(o for o in json.loads(run(capsys, config_file, "orgs", "list", "--json")[1])
                if o["slug"] == "acme")  # fmt: skip
    # The server's language and time zone become the new organisation's own.
    assert (acme["language"], acme["timezone"]) == ("nl", "Europe/Amsterdam")

    # Several organisations: a command about one must say which.
    code, out, err = run(capsys, config_file, "users", "list")
    assert (code, out) == (2, "") and "give --org SLUG" in err and "acme" in err
    assert run(capsys, config_file, "users", "add", "201", "--name", "Ann", "--org", "acme")[0] == 0
    code, out, _ = run(capsys, config_file, "users", "list", "--org", "acme", "--json")
    assert [u["name"] for u in json.loads(out)] == ["Ann"]
    code, out, _ = run(capsys, config_file, "users", "list", "--org", "default", "--json")
    assert [u["name"] for u in json.loads(out)] == ["Dee"]
    code, _, err = run(capsys, config_file, "users", "list", "--org", "nobody")
    assert code == 1 and "unknown organisation 'nobody'" in err

    code, out, _ = run(
        capsys, config_file, "orgs", "set", "acme", "--domain", "ACME.test", "--language", "en"
    )
    assert code == 0 and "domain acme.test" in out
    code, _, err = run(capsys, config_file, "orgs", "set", "acme", "--domain", "pbx.example")
    assert code == 1 and "belongs to organisation 'default'" in err
    actions = in_store(tmp_path, lambda s: s.list_audit(None))
    assert [a.action for a in actions] == ["org.change", "org.add"]


def test_numbers_and_admins_of_an_organisation(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    run(capsys, config_file, "orgs", "add", "acme", "--name", "Acme", "--domain", "acme.example")
    code, out, err = run(
        capsys, config_file, "dids", "add", "--org", "acme", "31201000", "--last", "31201099"
    )
    assert (code, err) == (0, "") and "31201000..31201099" in out
    code, _, err = run(capsys, config_file, "dids", "add", "--org", "default", "31201050")
    assert code == 1 and "overlaps 31201000..31201099 of another organisation" in err
    code, out, _ = run(capsys, config_file, "dids", "list", "--org", "acme")
    assert "31201099" in out and "(the number)" in out
    code, out, _ = run(capsys, config_file, "dids", "list", "--org", "default")
    assert "31201" not in out

    secret = tmp_path / "pw"
    secret.write_text("long-enough-pw\n")
    code, out, _ = run(
        capsys, config_file, "admin", "add", "anna", "--org", "acme", "--password-file", str(secret)
    )
    assert (code, out) == (0, "added admin anna of organisation acme\n")
    code, out, _ = run(
        capsys, config_file, "admin", "add", "ops", "--operator", "--password-file", str(secret)
    )
    assert (code, out) == (0, "added operator ops\n")
    admin = in_store(tmp_path, lambda s: s.get_admin("anna"))
    operator = in_store(tmp_path, lambda s: s.get_admin("ops"))
    assert admin is not None and operator is not None
    assert (admin.role, operator.role, operator.org_id) == ("admin", "operator", None)
    code, out, _ = run(capsys, config_file, "admin", "list", "--org", "default")
    assert (code, out) == (0, "")


def test_usage_is_per_organisation_and_month(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    run(capsys, config_file, "orgs", "add", "acme", "--name", "Acme", "--domain", "acme.example")
    run(capsys, config_file, "users", "add", "201", "--name", "A", "--org", "acme")
    run(capsys, config_file, "users", "add", "202", "--name", "B", "--org", "acme", "--mode",
        "never")  # fmt: skip
    code, out, _ = run(capsys, config_file, "orgs", "usage", "--month", "2024-05")
    rows = {row["organisation"]: row for row in csv.DictReader(io.StringIO(out))}
    assert code == 0 and set(rows) == {"acme", "default"}
    assert rows["acme"]["recording_users"] == "1" and rows["acme"]["recordings"] == "0"
    assert rows["default"]["recording_users"] == "0"


def _acme_with_a_recording(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> Path:
    """Organisation acme with a user and one recording still under retention."""
    import time

    from storage.database import Store
    from storage.files import RecordingFiles

    run(capsys, config_file, "orgs", "add", "acme", "--name", "Acme", "--domain", "acme.example")
    run(capsys, config_file, "users", "add", "201", "--name", "Anna", "--org", "acme")
    run(capsys, config_file, "dids", "add", "31201000", "--org", "acme")

    async def file_one(store: Store) -> Path:
        acme = await store.org_scope("acme")
        user = await store.get_user(acme, "201")
        assert user is not None
        now = time.time()
        call_id = await store.create_call(
            acme.id, caller_user_id=user.id, sip_call_id="c@test", direction="outbound",
            caller_ext="201", callee_ext="0612", started_at=now - 9, ended_at=now - 1,
        )  # fmt: skip
        new = RecordingFiles(tmp_path / "data").new_recording("wav", now)
        new.absolute.parent.mkdir(parents=True, exist_ok=True)
        new.absolute.write_bytes(b"RIFF....WAVE")
        await store.create_recording(
            call_id=call_id, path=new.relative, format="wav", channels=1, sample_rate=8000,
            started_at=now - 8, retention_days=90, owner_ext="201",
        )  # fmt: skip
        return new.absolute

    return in_store(tmp_path, file_one)


def test_an_organisation_is_removed_only_when_confirmed_and_its_recordings_released(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recording = _acme_with_a_recording(capsys, config_file, tmp_path)

    # Not at a terminal, and not told --yes: nothing is removed.
    monkeypatch.setattr("callrec.cli._stdin_is_terminal", lambda: False)
    code, out, err = run(capsys, config_file, "org", "remove", "acme", "--purge-recordings")
    assert code == 2 and "confirm with --yes" in err
    assert "1 user(s)" in out and "1 recording(s), 1 of them still under retention" in out
    # Under retention without --purge-recordings: refused before anything is asked.
    code, _, err = run(capsys, config_file, "org", "remove", "acme", "--yes")
    assert code == 1 and "still under retention" in err and "--purge" not in err
    # At a terminal, a wrong answer removes nothing.
    monkeypatch.setattr("callrec.cli._stdin_is_terminal", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "default")
    code, _, err = run(capsys, config_file, "orgs", "remove", "acme", "--purge-recordings")
    assert code == 2 and "the answer was not acme" in err
    assert recording.is_file()
    assert in_store(tmp_path, lambda s: s.get_organisation("acme")) is not None

    # The slug typed back: removed, with the recording's file.
    monkeypatch.setattr("builtins.input", lambda prompt: "acme")
    code, out, err = run(capsys, config_file, "orgs", "remove", "acme", "--purge-recordings")
    assert (code, err) == (0, "") and "removed organisation acme: 1 user(s), 1 recording(s)" in out
    assert not recording.exists()
    assert in_store(tmp_path, lambda s: s.get_organisation("acme")) is None
    entries = in_store(tmp_path, lambda s: s.list_audit(None, 20))
    (removal,) = [entry for entry in entries if entry.action == "org.remove"]
    assert removal.actor.startswith("cli") and removal.object == "org:acme"
    assert "recordings under retention 1" in (removal.detail or "")
    code, out, _ = run(capsys, config_file, "orgs", "list", "--json")
    assert [org["slug"] for org in json.loads(out)] == ["default"]
    # An organisation that is not there.
    code, _, err = run(capsys, config_file, "org", "remove", "acme", "--yes")
    assert code == 1 and "unknown organisation 'acme'" in err


def test_an_organisation_without_recordings_under_retention_goes_with_yes(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    run(capsys, config_file, "orgs", "add", "empty", "--name", "Empty", "--domain", "e.example")
    code, out, err = run(capsys, config_file, "org", "remove", "empty", "--yes")
    assert (code, err) == (0, "") and "removed organisation empty" in out
