"""Suite-wide checks: every tool the tests drive must be installed.

A missing SIPp, espeak-ng, sox, multimon-ng, baresip, tshark, Chromium, Playwright,
aiosmtpd or trustme would make tests skip; instead the run stops at once and says what
to install (scripts/setup.sh installs all of it). CALLREC_ALLOW_MISSING_TOOLS=1 allows
a partial local run, and the skips are then listed at the end (-rs).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

# PostgreSQL fixtures (postgres_cluster, postgres_url) for the store's second backend.
pytest_plugins = ["tests.postgres_fixtures"]

COMMANDS = {
    "sipp": "apt-get install sip-tester",
    "espeak-ng": "apt-get install espeak-ng",
    "sox": "apt-get install sox",
    "multimon-ng": "apt-get install multimon-ng",
    "baresip": "apt-get install baresip",
    "tshark": "apt-get install tshark",
}
FILES = {
    os.environ.get("CALLREC_CHROMIUM", "/usr/bin/chromium"): "apt-get install chromium",
    "/usr/share/sip-tester/g711a.pcap": "apt-get install sip-tester",
}
MODULES = {
    "playwright": "pip install playwright",
    "aiosmtpd": "pip install aiosmtpd",
    "pjsua2": "pip install pjsua2-python",
    "trustme": "pip install trustme",
}


def missing_tools() -> list[str]:
    missing = [f"{name} ({how})" for name, how in COMMANDS.items() if shutil.which(name) is None]
    missing += [f"{path} ({how})" for path, how in FILES.items() if not Path(path).exists()]
    missing += [
        f"python module {name} ({how})"
        for name, how in MODULES.items()
        if importlib.util.find_spec(name) is None
    ]
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = missing_tools()
    if missing and not os.environ.get("CALLREC_ALLOW_MISSING_TOOLS"):
        raise pytest.UsageError(
            "tools the tests need are missing: "
            + "; ".join(missing)
            + ". Run scripts/setup.sh, or set CALLREC_ALLOW_MISSING_TOOLS=1 for a partial run."
        )
