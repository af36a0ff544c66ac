"""A local cluster for the cluster tests: Kamailio (deploy/kamailio/kamailio.cfg) on
127.0.0.10 in front of callrec nodes on 127.0.0.2, 127.0.0.3 ..., each with its own
SQLite store, data folder, media address and RTP range. Processes are ended by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.sipp_runner import free_port
from testkit.waiting import WaitTimeout, wait_until

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
PROXY_HOST = "127.0.0.10"
CALLREC = [sys.executable, "-m", "callrec.cli"]


def kamailio_missing() -> str | None:
    """Why the cluster tests cannot run here (None when they can)."""
    if shutil.which("kamailio") is None:
        return "kamailio is not installed (scripts/setup.sh --cluster installs it)"
    if shutil.which("sipp") is None:
        return "sipp is not installed (scripts/setup.sh installs it)"
    return None


def options_status(host: str, port: int, timeout: float = 0.5) -> str | None:
    """The status line of an answer to one OPTIONS sent to host:port over UDP, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        message = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        sock.settimeout(timeout)
        try:
            sock.sendto(message, (host, port))
            data = sock.recv(65535)
        except OSError:
            return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@dataclass
class Node:
    """One `callrec serve` on its own loopback address."""

    root: Path
    host: str
    trunk_port: int
    proxy_host: str = PROXY_HOST
    log_format: str = "json"
    sip_port: int = field(default_factory=free_port)
    portal_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    rtp_first: int = field(default_factory=lambda: free_port(even=True, span=200))
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "[sip]\n"
            f'listen = "{self.host}:{self.sip_port}"\n'
            f'proxies = ["{self.proxy_host}"]\n'
            'digest_algorithms = ["MD5"]\n'
            "[trunk]\n"
            f'uri = "sip:127.0.0.1:{self.trunk_port}"\n'
            "[media]\n"
            f'address = "{self.host}"\n'
            f'rtp_ports = "{self.rtp_first}-{self.rtp_first + 199}"\n'
            "workers = 1\n"
            "[storage]\n"
            f'dir = "{self.root / "data"}"\n'
            "[portal]\n"
            f'listen = "{self.host}:{self.portal_port}"\n'
            "metrics = true\n"
            "[server]\n"
            f'log_format = "{self.log_format}"\n'
        )

    @property
    def config_path(self) -> Path:
        return self.root / "callrec.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "serve.log"

    @property
    def portal_url(self) -> str:
        return f"http://{self.host}:{self.portal_port}"

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*CALLREC, *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def calls(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("calls", "list", "--json"))
        return rows

    def recordings(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("recordings", "list", "--json"))
        return rows

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "CALLREC_LOG_LEVEL": "INFO"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CALLREC, "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"callrec serve exited early:\n{self.log()}")
            return options_status(self.host, self.sip_port, 0.3) is not None

        try:
            wait_until(answering, timeout=timeout, what=f"node {self.host} up", interval=0.05)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.log()}") from None

    def kill(self) -> None:
        """kill -9, by PID."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Kamailio:
    """Kamailio with deploy/kamailio/kamailio.cfg in front of `nodes`."""

    root: Path
    nodes: list[Node]
    host: str = PROXY_HOST
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "kamailio.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        targets = self.root / "dispatcher.list"
        targets.write_text("".join(f"1 sip:{node.host}:{node.sip_port}\n" for node in self.nodes))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "kamailio",
                    "-f",
                    str(KAMAILIO_CFG),
                    "-DD",
                    "-E",
                    "-l",
                    f"udp:{self.address}",
                    "-A",
                    f'DISPATCHER_LIST="{targets}"',
                    "-A",
                    "CHILDREN=2",
                    "-m",
                    "64",
                    "-M",
                    "8",
                    "-Y",
                    str(self.root),
                    "-P",
                    str(self.root / "kamailio.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"kamailio exited:\n{self.log()}")
            return options_status(self.host, self.port, 0.3) is not None

        wait_until(answering, timeout=timeout, what="kamailio up", interval=0.05)

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_log(path: Path, text: str, timeout: float) -> float:
    """Seconds until `text` appears in the file at `path` (WaitTimeout past `timeout`)."""
    started = time.monotonic()
    wait_until(
        lambda: path.exists() and text in path.read_text(errors="replace"),
        timeout=timeout,
        what=f"{text!r} in {path.name}",
        interval=0.05,
    )
    return time.monotonic() - started
