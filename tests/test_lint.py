"""The packages stay clean under ruff and mypy --strict, and their imports keep to the
layer contracts (all configured in pyproject.toml)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("callrec", "callrec_phone", "b2bua", "media", "dtmf", "storage", "portal", "testkit")


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = run(ruff, "check", *PACKAGES, "bench", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def lint_imports() -> str:
    return shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def test_import_contracts_are_kept() -> None:
    result = run(lint_imports())
    assert result.returncode == 0, result.stdout + result.stderr


def copy_of_the_tree(target: Path) -> None:
    """The contracts' packages (their .py files) and pyproject.toml, copied to `target`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for package in config["tool"]["importlinter"]["root_packages"]:
        for source in (ROOT / package).rglob("*.py"):
            copy = target / source.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    shutil.copyfile(ROOT / "pyproject.toml", target / "pyproject.toml")


@pytest.mark.parametrize(
    ("module", "line", "edge", "contract"),
    [
        (
            "b2bua/breach.py",
            "import storage.database",
            "b2bua.breach -> storage.database",
            "b2bua reaches media and storage only through the Protocols the app wires",
        ),
        (
            "storage/breach.py",
            "from callrec.config import Config",
            "storage.breach -> callrec.config",
            "storage knows nothing of SIP, media, the portal, the config or the app"
            " (only the product rules)",
        ),
        (
            "callrec/policy.py",
            "import b2bua.message",
            "callrec.policy -> b2bua.message",
            "the product rules are a leaf",
        ),
    ],
)
def test_a_broken_import_contract_fails_the_lint(
    tmp_path: Path, module: str, line: str, edge: str, contract: str
) -> None:
    copy_of_the_tree(tmp_path)
    breach = tmp_path / module
    text = breach.read_text(encoding="utf-8") if breach.exists() else '"""A breach."""\n'
    breach.write_text(f"{text}\n{line}\n", encoding="utf-8")
    result = subprocess.run(
        [lint_imports(), "--no-cache"],
        cwd=tmp_path,
        # The copy, not the editable install of this checkout, is what gets analysed.
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # lint-imports wraps long lines: compare with the white space folded.
    assert f"{contract} BROKEN" in " ".join(output.split()), output
    assert edge in output, output
    # The other contracts are checked too (a breach may break the layers as well).
    assert re.search(r"^Contracts: \d+ kept, [1-9]\d* broken\.$", output, re.MULTILINE), output
