"""The `callrec` command line: in-process through main() and once as the real script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.cli import main
from storage.database import Store
from storage.passwords import ha1


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(
        f"[sip]\nrealm = 'office'\n\n[storage]\ndir = '{tmp_path / 'data'}'\n", encoding="utf-8"
    )
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def list_json(
    capsys: pytest.CaptureFixture[str], config: Path, *argv: str
) -> list[dict[str, object]]:
    code, out, err = run(capsys, config, *argv, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert isinstance(result, list)
    return result


def test_users_add_list_round_trip(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, err = run(
        capsys,
        config_file,
        "users", "add", "101", "--name", "Alice Smith", "--email", "alice@example.org",
        "--mode", "always", "--device", "sip:alice@127.0.0.1", "--device", "sip:alice@127.0.0.2",
        "--password", "s3cret",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "101" in out
    assert run(capsys, config_file, "users", "add", "102", "--name", "Bob")[0] == 0
    users = list_json(capsys, config_file, "users", "list")
    assert users[0] == {
        "extension": "101",
        "name": "Alice Smith",
        "email": "alice@example.org",
        "mode": "always",
        "devices": ["sip:alice@127.0.0.1", "sip:alice@127.0.0.2"],
        "has_password": True,
        "realm": "office",
        "created_at": users[0]["created_at"],
    }
    assert [(u["extension"], u["mode"], u["has_password"]) for u in users] == [
        ("101", "always", True),
        ("102", "on-demand", False),
    ]
    assert "s3cret" not in json.dumps(users)
    code, out, _ = run(capsys, config_file, "users", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["EXT", "NAME", "EMAIL", "MODE"]
    assert rows[0].startswith("101") and "Alice Smith" in rows[0]
    assert rows[1].startswith("102") and "Bob" in rows[1]


def test_set_mode_set_password_remove(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    assert run(capsys, config_file, "users", "add", "101", "--name", "Alice")[0] == 0
    assert run(capsys, config_file, "users", "set-mode", "101", "never")[0] == 0
    assert run(capsys, config_file, "users", "set-password", "101", "pw")[0] == 0
    (user,) = list_json(capsys, config_file, "users", "list")
    assert (user["mode"], user["has_password"]) == ("never", True)

    async def stored_ha1() -> str | None:
        store = await Store.open(tmp_path / "data" / "callrec.db")
        try:
            found = await store.get_user("101")
            return found.ha1_md5 if found else None
        finally:
            await store.close()

    # the realm comes from the config file
    assert asyncio.run(stored_ha1()) == ha1("101", "office", "pw")
    assert run(capsys, config_file, "users", "remove", "101")[0] == 0
    assert list_json(capsys, config_file, "users", "list") == []


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["users", "set-mode", "999", "always"], 1, "callrec: error: unknown extension 999"),
        (["users", "remove", "999"], 1, "unknown extension 999"),
        (["users", "set-password", "999", "x"], 1, "unknown extension 999"),
        (["users", "add", "101", "--name", "Again"], 1, "user 101 already exists"),
        (["users", "add", "102", "--name", "X", "--device", "tel:1"], 1, "invalid device URI"),
        (["users", "add", "1x", "--name", "X"], 2, "invalid extension '1x'"),
        (["users", "add", "102"], 2, "--name"),
        (["users", "set-mode", "101", "loud"], 2, "invalid choice"),
        (["calls", "list", "--limit", "0"], 2, "expected a positive integer"),
        (["users", "frobnicate"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    capsys: pytest.CaptureFixture[str], config_file: Path, argv: list[str], code: int, message: str
) -> None:
    assert run(capsys, config_file, "users", "add", "101", "--name", "Alice")[0] == 0
    got_code, _out, err = run(capsys, config_file, *argv)
    assert got_code == code
    assert message in err
    assert "Traceback" not in err
    if code == 1:
        assert err.count("\n") == 1


@pytest.mark.parametrize("command", [["users", "list"], ["calls", "list"], ["serve"]])
def test_config_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[media]\nrtp_ports = '20001-20000'\n")
    code, _out, err = run(capsys, bad, *command)
    assert code == 2
    assert err == (
        "callrec: config error: [media] rtp_ports: expected 'FIRST-LAST' with even FIRST < LAST"
        " (1024-65535), got '20001-20000'\n"
    )


def test_missing_config_file_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, tmp_path / "absent.toml", "users", "list")
    assert code == 2
    assert "cannot read" in err and "absent.toml" in err


def test_calls_list(capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path) -> None:
    async def seed() -> None:
        store = await Store.open(tmp_path / "data" / "callrec.db")
        try:
            first = await store.create_call(
                sip_call_id="a@127.0.0.1", direction="outbound", caller_ext="101",
                caller_name="Alice", callee_ext="900", started_at=1_700_000_000.0,
            )  # fmt: skip
            await store.update_call(
                first, answered_at=1_700_000_002.0, ended_at=1_700_000_032.0,
                disposition="answered", sip_status=200, recorded=True,
            )  # fmt: skip
            await store.create_call(
                sip_call_id="b@127.0.0.1", direction="inbound", callee_ext="102",
                started_at=1_700_000_100.0, disposition="busy", sip_status=486,
            )  # fmt: skip
        finally:
            await store.close()

    asyncio.run(seed())
    calls = list_json(capsys, config_file, "calls", "list")
    assert [c["sip_call_id"] for c in calls] == ["b@127.0.0.1", "a@127.0.0.1"]
    assert calls[1]["started_at"] == "2023-11-14T22:13:20.000Z"
    assert (calls[1]["duration_s"], calls[1]["recorded"], calls[1]["disposition"]) == (
        30.0,
        True,
        "answered",
    )
    assert len(list_json(capsys, config_file, "calls", "list", "--limit", "1")) == 1
    only_101 = list_json(capsys, config_file, "calls", "list", "--extension", "101")
    assert [c["sip_call_id"] for c in only_101] == ["a@127.0.0.1"]
    code, out, _ = run(capsys, config_file, "calls", "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert "busy" in lines[1] and "102" in lines[1]
    assert "101 (Alice)" in lines[2] and "30s" in lines[2]


def test_real_console_script(config_file: Path) -> None:
    # The script installed beside the running interpreter (venv/bin/callrec): the README's
    # `venv/bin/python -m pytest` does not put venv/bin on PATH.
    script = str(Path(sys.executable).parent / "callrec")
    assert Path(script).exists(), f"the callrec console script is not installed at {script}"
    added = subprocess.run(
        [script, "users", "add", "201", "--name", "Script User", "--mode", "never",
         "--config", str(config_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [script, "users", "list", "--json", "--config", str(config_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    users = json.loads(listed.stdout)
    assert [(u["extension"], u["name"], u["mode"]) for u in users] == [
        ("201", "Script User", "never")
    ]
    failed = subprocess.run(
        [script, "users", "remove", "999", "--config", str(config_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr == "callrec: error: unknown extension 999\n"
