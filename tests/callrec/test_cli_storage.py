"""`callrec recordings export`, `callrec purge`, `callrec admin add`, `callrec settings set`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from callrec.cli import PASSWORD_WARNING, main
from callrec.policy import SETTINGS_KEYS, PolicyError, parse_setting
from storage.database import Store
from tests.storage.orgs import ORG
from tests.storage.recording_factory import DAY, FiledRecording, file_recording

T = TypeVar("T")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(f"[storage]\ndir = '{tmp_path / 'data'}'\n", encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def in_store(tmp_path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on the CLI's store, between two commands."""

    async def go() -> T:
        store = await Store.open(tmp_path / "data" / "callrec.db")
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_admin_add_stores_an_argon2_hash_that_verifies(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "root.pw"
    secret.write_text("s3cret-pass\n", encoding="utf-8")
    code, out, err = run(
        capsys, config_file, "admin", "add", "root", "--password-file", str(secret)
    )
    assert (code, out, err) == (0, "added admin root of organisation default\n", "")

    async def check(store: Store) -> tuple[object, object, object]:
        good = await store.verify_admin("root", "s3cret-pass")
        bad = await store.verify_admin("root", "s3cret-pasS")
        nobody = await store.verify_admin("nobody", "s3cret-pass")
        return good, bad, nobody

    good, bad, nobody = in_store(tmp_path, check)
    assert good is not None and bad is None and nobody is None

    code, _, err = run(capsys, config_file, "admin", "add", "root", "--password", "another-pass")
    assert code == 1 and err == PASSWORD_WARNING + "callrec: error: admin 'root' already exists\n"
    code, _, err = run(capsys, config_file, "admin", "add", "bob", "--password", "short")
    assert code == 1 and "at least 8 characters" in err
    code, _, err = run(capsys, config_file, "admin", "add", "bob")
    assert code == 2  # no terminal to prompt on, and no password given
    assert err == (
        "callrec: error: a password is needed: run in a terminal to be prompted,"
        " or use --password-file FILE\n"
    )

    async def admin_hashes(store: Store) -> list[sqlite3.Row]:
        async with store.database.read() as session:
            return await session.all("SELECT password_hash FROM admins")

    hashes = in_store(tmp_path, admin_hashes)
    assert [row["password_hash"][:9] for row in hashes] == ["$argon2id"]


def test_settings_set_retention(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, config_file, "settings", "set", "retention_days", "200")
    assert code == 0 and "retention_days = 200" in out
    code, _, err = run(capsys, config_file, "settings", "set", "retention_days", "20")
    assert code == 1 and "expected whole days from 30 to 365" in err
    assert in_store(tmp_path, lambda s: s.get_org_setting(ORG, "retention_days")) == "200"


def test_settings_set_knows_every_key_the_portal_sets_and_show_lists_them(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, config_file, "settings", "show", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "feature_code": "*1",
        "retention_days": 90,
        "announcement": "default",
        "channels": "mono",
        "language": "en",
        "timezone": "UTC",
        "bulk_download": "off",
    }
    assert sorted(json.loads(out)) == sorted(SETTINGS_KEYS)
    for key, value in [
        ("feature_code", "*7"),
        ("retention_days", "120"),
        ("announcement", "beep"),
        ("channels", "stereo"),
        ("language", "nl"),
        ("timezone", "Europe/Amsterdam"),
    ]:
        code, out, err = run(capsys, config_file, "settings", "set", key, value)
        assert (code, err) == (0, ""), key
        assert out.startswith(f"{key} = {value}")
    code, out, _ = run(capsys, config_file, "settings", "show")
    assert out == (
        "feature_code = *7\nretention_days = 120\nannouncement = beep\nchannels = stereo\n"
        "language = nl\ntimezone = Europe/Amsterdam\nbulk_download = off\n"
    )
    assert in_store(tmp_path, lambda s: s.org_settings(ORG)) == {
        "feature_code": "*7",
        "retention_days": "120",
        "announcement": "beep",
        "channels": "stereo",
        "language": "nl",
        "timezone": "Europe/Amsterdam",
    }
    audit = in_store(tmp_path, lambda s: s.list_audit(ORG, 10))
    assert [entry.action for entry in audit].count("settings.change") == 6


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # Once accepted by the config check, then refused by the DTMF layer on every call.
        ("feature_code", "#5", "feature_code: the feature code must be * followed by one digit"),
        ("feature_code", "*12", "feature_code: the feature code must be * followed by one digit"),
        ("retention_days", "366", "retention_days: invalid retention '366': expected whole days"),
        ("announcement", "loud", "announcement: announcement must be 'default' or 'beep' or"),
        ("channels", "quad", "channels: channels must be 'mono' or 'stereo', got 'quad'"),
    ],
)
def test_settings_set_refuses_what_the_rules_refuse(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, key: str, value: str,
    message: str,
) -> None:  # fmt: skip
    code, out, err = run(capsys, config_file, "settings", "set", key, value)
    assert (code, out) == (1, "")
    assert err.startswith(f"callrec: error: {message}") and err.count("\n") == 1
    with pytest.raises(PolicyError) as refused:
        parse_setting(key, value)
    # The same sentence the API answers with (it uses the same rule).
    assert err == f"callrec: error: {key}: {refused.value}\n"
    assert in_store(tmp_path, lambda s: s.org_settings(ORG)) == {}


def test_settings_set_unknown_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code, _, err = run(capsys, config_file, "settings", "set", "colour", "red")
    assert code == 2 and "invalid choice: 'colour'" in err


def test_export_refused_below_180_then_written(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    start = datetime(2024, 5, 10, 12, tzinfo=UTC).timestamp()
    filed = in_store(tmp_path, lambda s: file_recording(s, tmp_path / "data", started_at=start))
    assert isinstance(filed, FiledRecording)
    target = tmp_path / "may.zip"
    code, out, err = run(
        capsys, config_file, "recordings", "export", "--month", "2024-05", "-o", str(target)
    )
    assert (code, out) == (1, "")
    assert err == "callrec: error: bulk download needs retention of 180 days or more (now 90)\n"
    assert not target.exists()

    assert run(capsys, config_file, "settings", "set", "retention_days", "180")[0] == 0
    code, out, err = run(
        capsys, config_file, "recordings", "export", "--month", "2024-05", "-o", str(target)
    )
    assert (code, out) == (1, "")
    assert "bulk download is switched off" in err
    assert run(capsys, config_file, "settings", "set", "bulk_download", "on")[0] == 0
    code, out, err = run(
        capsys, config_file, "recordings", "export", "--month", "2024-05", "-o", str(target)
    )
    assert (code, err) == (0, "")
    assert out == f"exported 1 recording(s) of 2024-05 to {target.resolve()}\n"
    with zipfile.ZipFile(target) as archive:
        manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert archive.read(manifest[0]["file"]) == filed.path.read_bytes()
    assert manifest[0]["sha256"] == filed.sha256

    code, _, err = run(
        capsys, config_file, "recordings", "export", "--month", "2024-5", "-o", str(target)
    )
    assert code == 1 and "expected YYYY-MM" in err


def test_purge_deletes_only_expired_recordings(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    now = time.time()
    storage = tmp_path / "data"
    expired = in_store(
        tmp_path, lambda s: file_recording(s, storage, started_at=now - 31 * DAY, retention_days=30)
    )
    kept = in_store(
        tmp_path, lambda s: file_recording(s, storage, started_at=now - 29 * DAY, retention_days=30)
    )
    assert isinstance(expired, FiledRecording) and isinstance(kept, FiledRecording)
    code, out, err = run(capsys, config_file, "purge")
    assert (code, err) == (0, "")
    assert out == f"purged recording {expired.id}: {expired.relative}\n1 purged, 0 failed\n"
    assert not expired.path.exists() and kept.path.exists()
    code, out, _ = run(capsys, config_file, "purge")
    assert (code, out) == (0, "0 purged, 0 failed\n")
