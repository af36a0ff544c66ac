"""Ending a test's or a bench's child process: by its PID, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def stop_by_pid(process: subprocess.Popen[Any] | None, grace_s: float = 10.0) -> None:
    """SIGTERM `process` if it still runs, SIGKILL it after `grace_s`, and reap it."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
