"""Starts the real `callrec serve` as a subprocess on free loopback ports for e2e tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CALLREC = [sys.executable, "-m", "b2bua.cli"]


def free_port(kind: int = socket.SOCK_DGRAM, *, even: bool = False, span: int = 1) -> int:
    """A port free for UDP and TCP (and the `span - 1` ports above it)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if even and port % 2:
            port += 1
        if port + span >= 65000:
            continue
        if all(_is_free(p) for p in range(port, port + span)):
            return port
    raise RuntimeError("no free port found")


def _is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                return False
    return True


def sip_options(port: int, *, timeout: float = 1.0, transport: str = "udp") -> str | None:
    """Send an OPTIONS to callrec and return the status line of the answer, or None.

    Over UDP it is retransmitted as a UA would (RFC 3261 Timer E) until `timeout`.
    """
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            if transport == "tcp":
                sock.settimeout(timeout)
                sock.connect((HOST, port))
            else:
                sock.bind((HOST, 0))
            local = sock.getsockname()[1]
            branch = "z9hG4bK" + uuid.uuid4().hex
            message = (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {HOST}:{local};branch={branch}\r\n"
                f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{HOST}:{port}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            if transport == "tcp":
                sock.sendall(message)
                data = sock.recv(65535)
            else:
                interval = 0.25
                while True:
                    sock.sendto(message, (HOST, port))
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    sock.settimeout(min(interval, remaining))
                    try:
                        data = sock.recv(65535)
                        break
                    except TimeoutError:
                        interval *= 2
        except OSError:
            return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


@dataclass
class CallrecServer:
    """A running `callrec serve` with its config, data dir and ports."""

    root: Path
    sip_port: int
    trunk_port: int
    rtp_first: int
    rtp_last: int
    extra_config: str = ""
    # The web portal / REST API (TCP) port, `[portal] listen`.
    portal_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "serve.log"
        self.config_path.write_text(
            f'[sip]\nlisten = "{HOST}:{self.sip_port}"\n'
            f'[trunk]\nuri = "sip:{HOST}:{self.trunk_port}"\n'
            f'[media]\nrtp_ports = "{self.rtp_first}-{self.rtp_last}"\n'
            f'[storage]\ndir = "{self.data_dir}"\n'
            f'[portal]\nlisten = "{HOST}:{self.portal_port}"\n' + self.extra_config
        )

    @property
    def config_path(self) -> Path:
        return self.root / "callrec.toml"

    @property
    def portal_url(self) -> str:
        return f"http://{HOST}:{self.portal_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*CALLREC, *args, "--config", str(self.config_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result

    def add_user(self, extension: str, name: str, password: str, *extra: str) -> None:
        self.cli("users", "add", extension, "--name", name, "--password", password, *extra)

    def calls(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.cli("calls", "list", "--json").stdout)
        return data

    def wait_for_calls(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """CDRs once `count` calls have ended (written asynchronously after the BYE)."""
        deadline = time.monotonic() + timeout
        rows = self.calls()
        while time.monotonic() < deadline:
            rows = self.calls()
            if len([r for r in rows if r.get("ended_at")]) >= count:
                return rows
            time.sleep(0.2)
        return rows

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ, CALLREC_LOG_LEVEL=os.environ.get("CALLREC_LOG_LEVEL", "INFO"))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*CALLREC, "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"callrec serve exited early:\n{self.log()}")
            if sip_options(self.sip_port, timeout=0.3) is not None:
                return
            time.sleep(0.1)
        raise AssertionError(f"callrec serve did not answer OPTIONS:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_server(root: Path, extra_config: str = "") -> CallrecServer:
    rtp_first = free_port(even=True, span=400)
    return CallrecServer(
        root=root,
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=rtp_first,
        rtp_last=rtp_first + 399,
        extra_config=extra_config,
    )
