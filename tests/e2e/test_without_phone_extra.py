"""`callrec serve` on a machine without the phone extra: it starts and serves calls.

pjsua2 is installed here (the tests' softphone needs it), so the server runs with a
`sitecustomize` that hides it as a machine without `callrec[phone]` would: `import
pjsua2` raises ModuleNotFoundError and `importlib.util.find_spec("pjsua2")` is None.
Every attempt to find it is noted in a file, so the test also sees that the proxy never
even looks for it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import CALLREC, CallrecServer, free_port, make_server
from testkit.sipp_runner import environment_ok

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PASSWORD = "pw-201"

_HIDE_PJSUA2 = textwrap.dedent(
    """
    import importlib.machinery
    import os
    import sys

    class _PathFinderWithoutPjsua2(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if fullname.partition(".")[0] in ("pjsua2", "_pjsua2"):
                with open(os.environ["CALLREC_TEST_PJSUA2_LOOKUPS"], "a") as lookups:
                    lookups.write(f"{os.getpid()} {fullname} {sys.argv!r}\\n")
                return None
            return super().find_spec(fullname, path, target)

    sys.meta_path[:] = [
        _PathFinderWithoutPjsua2 if finder is importlib.machinery.PathFinder else finder
        for finder in sys.meta_path
    ]
    """
)


def without_phone_extra(root: Path) -> dict[str, str]:
    """The environment of a process that cannot find pjsua2 (see the module docstring)."""
    hide = root / "no-phone-extra"
    hide.mkdir(parents=True)
    (hide / "sitecustomize.py").write_text(_HIDE_PJSUA2, encoding="utf-8")
    lookups = root / "pjsua2-lookups.txt"
    lookups.touch()
    return {"PYTHONPATH": str(hide), "CALLREC_TEST_PJSUA2_LOOKUPS": str(lookups)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    root = tmp_path_factory.mktemp("no-phone")
    srv = make_server(root, '[recording]\nannouncement = "none"\n', sipp=True)
    srv.extra_env = without_phone_extra(root)
    srv.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    yield from srv.serving()


def lookups_by_serve(server: CallrecServer) -> list[str]:
    """The lookups of pjsua2 the running `callrec serve` made."""
    assert server.process is not None
    noted = Path(server.extra_env["CALLREC_TEST_PJSUA2_LOOKUPS"]).read_text(encoding="utf-8")
    return [line for line in noted.splitlines() if line.split()[0] == str(server.process.pid)]


def run_there(server: CallrecServer, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` run in the server's environment, without the phone extra."""
    return subprocess.run(
        command, env=server.environment(), capture_output=True, text=True, timeout=60
    )


def test_pjsua2_cannot_be_imported_in_that_environment(server: CallrecServer) -> None:
    probe = run_there(
        server,
        sys.executable,
        "-c",
        "import importlib.util; assert importlib.util.find_spec('pjsua2') is None; import pjsua2",
    )
    assert probe.returncode != 0
    assert "ModuleNotFoundError: No module named 'pjsua2'" in probe.stderr, probe.stderr


def test_serve_answers_and_records_a_call_without_looking_for_pjsua2(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = len(server.calls())
    trunk = server.start_sipp_trunk(tmp_path / "uas")
    phone = server.run_sipp_phone(
        tmp_path / "uac",
        caller="201",
        password=PASSWORD,
        local_port=free_port(),
        call_length_ms=2000,
    )
    trunk_result = trunk.wait()
    assert phone.ok, phone.summary()
    assert trunk_result.ok, trunk_result.summary()
    call = server.wait_for_calls(before + 1)[0]
    assert call["disposition"] == "answered", call
    recording = server.wait_for_recording(int(call["id"]))
    assert recording["status"] == "complete", recording
    assert (server.data_dir / recording["path"]).stat().st_size > 0
    assert lookups_by_serve(server) == [], "the proxy looked for pjsua2"


def test_the_phone_command_says_how_to_install_the_extra(server: CallrecServer) -> None:
    result = run_there(
        server, *CALLREC, "phone", "dial", "300", "--via", server.sip_address, "--as", "201"
    )
    assert result.returncode != 0
    assert "pip install 'callrec[phone]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
