"""The `callrec` command line: in-process through main() and once as the real script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import callrec
from callrec.cli import PASSWORD_WARNING, main
from storage.accounts import ha1
from storage.database import Store
from tests.storage.orgs import ORG


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


def stored_ha1(tmp_path: Path, extension: str = "101") -> str | None:
    """The HA1 the CLI stored for `extension` (read between two commands)."""

    async def read() -> str | None:
        store = await Store.open(tmp_path / "data" / "callrec.db")
        try:
            found = await store.get_user(ORG, extension)
            return found.ha1_md5 if found else None
        finally:
            await store.close()

    return asyncio.run(read())


def test_users_add_list_round_trip(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, err = run(
        capsys,
        config_file,
        "users", "add", "101", "--name", "Alice Smith", "--email", "alice@example.org",
        "--mode", "always", "--device", "sip:alice@127.0.0.1", "--device", "sip:alice@127.0.0.2",
        "--password", "s3cret",
    )  # fmt: skip
    assert (code, err) == (0, PASSWORD_WARNING)
    assert "101" in out
    assert run(capsys, config_file, "users", "add", "102", "--name", "Bob")[0] == 0
    users = list_json(capsys, config_file, "users", "list")
    assert users[0] == {
        "extension": "101",
        "name": "Alice Smith",
        "email": "alice@example.org",
        "recording_mode": "always",
        "has_password": True,
        "portal_login": False,
        "realm": "office",
        "language": None,
        "created_at": users[0]["created_at"],
        "devices": [
            {"id": device["id"], "uri": uri, "username": "alice", "kind": device["kind"]}
            for device, uri in zip(
                users[0]["devices"], ["sip:alice@127.0.0.1", "sip:alice@127.0.0.2"], strict=True
            )
        ],
    }
    assert [(u["extension"], u["recording_mode"], u["has_password"]) for u in users] == [
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
    assert (user["recording_mode"], user["has_password"]) == ("never", True)

    # the realm comes from the config file
    assert stored_ha1(tmp_path) == ha1("101", "office", "pw")
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
        # one error line (after the command line password's warning, if any)
        assert len([line for line in err.splitlines() if "warning:" not in line]) == 1


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
            first = await store.create_call(ORG.id,
                sip_call_id="a@127.0.0.1", direction="outbound", caller_ext="101",
                caller_name="Alice", callee_ext="900", started_at=1_700_000_000.0,
            )  # fmt: skip
            await store.update_call(
                first, answered_at=1_700_000_002.0, ended_at=1_700_000_032.0,
                disposition="answered", sip_status=200, recorded=True,
            )  # fmt: skip
            await store.create_call(ORG.id,
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
    assert [(u["extension"], u["name"], u["recording_mode"]) for u in users] == [
        ("201", "Script User", "never")
    ]
    failed = subprocess.run(
        [script, "users", "remove", "999", "--config", str(config_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr == "callrec: error: unknown extension 999\n"


# -- version, where the config comes from, passwords -----------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"callrec {callrec.__version__}\n"


def test_python_dash_m_runs_the_same_cli(config_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callrec", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"callrec {callrec.__version__}\n")


def test_config_before_or_after_the_command_or_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # without any config: ./callrec-data, an empty store
    assert main(["--config", str(config_file), "users", "add", "101", "--name", "A"]) == 0
    assert main(["users", "add", "102", "--name", "B", "--config", str(config_file)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("CALLREC_CONFIG", str(config_file))
    assert main(["users", "list", "--json"]) == 0
    users = json.loads(capsys.readouterr().out)
    assert [(u["extension"], u["realm"]) for u in users] == [("101", "office"), ("102", "office")]
    # --config wins over the environment
    other = tmp_path / "other.toml"
    other.write_text(f"[storage]\ndir = '{tmp_path / 'other'}'\n", encoding="utf-8")
    assert main(["--config", str(other), "users", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    monkeypatch.setenv("CALLREC_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["users", "list"]) == 2
    assert "absent.toml" in capsys.readouterr().err


def test_password_from_a_file_or_a_prompt_never_the_command_line(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text("from-file\r\nignored second line\n", encoding="utf-8")
    code, _, err = run(
        capsys, config_file, "users", "add", "101", "--name", "A", "--password-file", str(secret)
    )
    assert (code, err) == (0, "")
    assert stored_ha1(tmp_path) == ha1("101", "office", "from-file")

    # Not a terminal and no password: refused, nothing changed.
    code, _, err = run(capsys, config_file, "users", "set-password", "101")
    assert code == 2 and "run in a terminal to be prompted" in err
    assert stored_ha1(tmp_path) == ha1("101", "office", "from-file")

    # A terminal: prompted twice; a mismatch changes nothing.
    answers = iter(["typed-pw", "typed-pw", "one", "two"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("callrec.cli._stdin_is_terminal", lambda: True)
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    code, out, err = run(capsys, config_file, "users", "set-password", "101")
    assert (code, out, err) == (0, "user 101: password changed\n", "")
    assert prompts == ["Password: ", "Password again: "]
    assert stored_ha1(tmp_path) == ha1("101", "office", "typed-pw")
    code, _, err = run(capsys, config_file, "users", "set-password", "101")
    assert (code, err) == (2, "callrec: error: the two passwords differ\n")
    assert stored_ha1(tmp_path) == ha1("101", "office", "typed-pw")

    # The command line still works for scripts, with a warning; only one way at a time.
    code, _, err = run(capsys, config_file, "users", "set-password", "101", "--password", "cli")
    assert (code, err) == (0, PASSWORD_WARNING)
    assert stored_ha1(tmp_path) == ha1("101", "office", "cli")
    code, _, err = run(
        capsys, config_file, "users", "set-password", "101", "x", "--password-file", str(secret)
    )
    assert code == 2 and "one way only" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    code, _, err = run(
        capsys, config_file, "users", "set-password", "101", "--password-file", str(empty)
    )
    assert code == 2 and "empty first line" in err
    code, _, err = run(
        capsys, config_file, "users", "set-password", "101", "--password-file", "/nonexistent"
    )
    assert code == 2 and "cannot read the password file /nonexistent" in err
    assert stored_ha1(tmp_path) == ha1("101", "office", "cli")
