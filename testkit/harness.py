"""Starts the real `callrec serve` as a subprocess on free loopback ports for e2e tests.

It also builds the peers of a call through it: SIPp phones and trunks, and the
arguments of `callrec phone` (pjsua2) phones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.processes import stop_by_pid
from testkit.sipp_runner import SippProcess, SippResult, run_sipp, start_sipp
from testkit.sipp_runner import free_port as free_port
from testkit.waiting import WaitTimeout, wait_until

HOST = "127.0.0.1"
CALLREC = [sys.executable, "-m", "callrec.cli"]
# SIPp can only answer an MD5 challenge and takes the first one offered.
SIPP_DIGEST_CONFIG = 'digest_algorithms = ["MD5", "SHA-256"]\n'
# The number the phones dial: callrec routes it to the trunk.
TRUNK_NUMBER = "300"


def sip_options(
    port: int, *, timeout: float = 1.0, transport: str = "udp", host: str = HOST
) -> str | None:
    """Send an OPTIONS to `host`:`port` (callrec, or a proxy in front of it) and return
    the status line of the answer, or None.

    Over UDP it is retransmitted as a UA would (RFC 3261 Timer E) until `timeout`.
    """
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            if transport == "tcp":
                sock.settimeout(timeout)
                sock.connect((host, port))
            else:
                sock.bind((HOST, 0))
            local = sock.getsockname()[1]
            branch = "z9hG4bK" + uuid.uuid4().hex
            message = (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {HOST}:{local};branch={branch}\r\n"
                f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"To: <sip:{host}:{port}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            if transport == "tcp":
                sock.sendall(message)
                data = sock.recv(65535)
            else:
                interval = 0.25
                while True:
                    sock.sendto(message, (host, port))
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
    # Extra lines of the `[sip]` table, e.g. SIPP_DIGEST_CONFIG.
    sip_config: str = ""
    media_config: str = ""  # more [media] keys
    # Set in the environment of `callrec serve` and of the CLI commands, over os.environ.
    extra_env: dict[str, str] = field(default_factory=dict)
    # The web portal / REST API (TCP) port, `[portal] listen`.
    portal_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "serve.log"
        self.config_path.write_text(
            f'[sip]\nlisten = "{self.sip_address}"\n{self.sip_config}'
            f'[trunk]\nuri = "sip:{HOST}:{self.trunk_port}"\n'
            f'[media]\nrtp_ports = "{self.rtp_first}-{self.rtp_last}"\n{self.media_config}'
            f'[storage]\ndir = "{self.data_dir}"\n'
            f'[portal]\nlisten = "{HOST}:{self.portal_port}"\n' + self.extra_config
        )

    @property
    def config_path(self) -> Path:
        return self.root / "callrec.toml"

    @property
    def sip_address(self) -> str:
        """HOST:PORT where callrec takes SIP from phones."""
        return f"{HOST}:{self.sip_port}"

    @property
    def portal_url(self) -> str:
        return f"http://{HOST}:{self.portal_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*CALLREC, *args, "--config", str(self.config_path)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=self.environment()
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result

    def serving(self) -> Iterator[CallrecServer]:
        """Start, yield this server, stop it: `yield from srv.serving()` in a fixture."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def add_user(self, extension: str, name: str, password: str, *extra: str) -> None:
        self.cli("users", "add", extension, "--name", name, "--password", password, *extra)

    def calls(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.cli("calls", "list", "--json").stdout)
        return data

    def wait_for_calls(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """CDRs once `count` calls have ended (written asynchronously after the BYE)."""

        def ended() -> list[dict[str, Any]] | None:
            rows = self.calls()
            return rows if len([r for r in rows if r.get("ended_at")]) >= count else None

        return wait_until(ended, timeout=timeout, what=f"{count} ended call(s)", interval=0.2)

    def recordings(self) -> list[dict[str, Any]]:
        """The rows of `callrec recordings list --json`."""
        rows: list[dict[str, Any]] = json.loads(self.cli("recordings", "list", "--json").stdout)
        return rows

    def recordings_of_call(self, call_id: int) -> list[dict[str, Any]]:
        return [row for row in self.recordings() if row["call_id"] == call_id]

    def wait_for_recording(self, call_id: int, timeout: float = 10.0) -> dict[str, Any]:
        """The call's recording once it is no longer in progress (AssertionError if none)."""

        def finished() -> dict[str, Any] | None:
            rows = [r for r in self.recordings_of_call(call_id) if r["status"] != "recording"]
            return rows[0] if rows else None

        try:
            return wait_until(
                finished,
                timeout=timeout,
                what=f"finished recording of call {call_id}",
                interval=0.2,
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}: {self.recordings()}") from None

    def start_sipp_trunk(
        self,
        work_dir: Path,
        scenario: str = "uas_echo.xml",
        *,
        media_port: int | None = None,
        rtp_echo: bool = True,
        timeout_s: float = 60.0,
        ready_wait_s: float = 10.0,
        **options: object,
    ) -> SippProcess:
        """SIPp answering as the trunk, media on `media_port` (a free even one if None)."""
        return start_sipp(
            scenario,
            work_dir=work_dir,
            timeout_s=timeout_s,
            ready_wait_s=ready_wait_s,
            local_port=self.trunk_port,
            media_port=media_port if media_port is not None else free_port(even=True, span=4),
            rtp_echo=rtp_echo,
            **options,
        )

    def start_sipp_phone(
        self,
        work_dir: Path,
        scenario: str = "uac_auth_pcap.xml",
        *,
        caller: str,
        password: str,
        callee: str = TRUNK_NUMBER,
        media_port: int | None = None,
        timeout_s: float = 60.0,
        ready_wait_s: float = 10.0,
        **options: object,
    ) -> SippProcess:
        """SIPp as extension `caller` calling `callee` through callrec, with digest.

        `-auth_uri` puts the Request-URI (callee@callrec) in the digest instead of
        SIPp's default, callrec's bare address.
        """
        return start_sipp(
            scenario,
            work_dir=work_dir,
            timeout_s=timeout_s,
            ready_wait_s=ready_wait_s,
            remote=self.sip_address,
            media_port=media_port if media_port is not None else free_port(even=True, span=4),
            callee=callee,
            caller=caller,
            user=caller,
            password=password,
            extra=["-auth_uri", f"{callee}@{self.sip_address}"],
            **options,
        )

    def start_answered_call(
        self, work_dir: Path, *, caller: str, password: str, seconds: float = 20.0
    ) -> tuple[SippProcess, SippProcess, dict[str, Any]]:
        """A SIPp trunk and a SIPp phone (`caller`) in one call of `seconds` through
        callrec, returned once it is answered: (trunk, phone, the call's row)."""
        trunk = self.start_sipp_trunk(work_dir / "uas", timeout_s=seconds + 10)
        phone = self.start_sipp_phone(
            work_dir / "uac",
            caller=caller,
            password=password,
            call_length_ms=int(seconds * 1000),
            timeout_s=seconds + 10,
            ready_wait_s=0,
        )
        try:
            rows = wait_until(
                lambda: (found := self.calls()) and found[0].get("answered_at") and found,
                timeout=10,
                what="the call answered",
                interval=0.1,
            )
        except BaseException:
            for sipp in (phone, trunk):
                sipp.stop(grace_s=1.0)
            raise
        return trunk, phone, rows[0]

    def run_sipp_phone(
        self, work_dir: Path, scenario: str = "uac_auth_pcap.xml", **options: Any
    ) -> SippResult:
        """`start_sipp_phone`, run to its end."""
        return self.start_sipp_phone(work_dir, scenario, ready_wait_s=0, **options).wait()

    def run_sipp_from_trunk(
        self,
        work_dir: Path,
        *,
        callee: str,
        caller: str,
        timeout_s: float = 60.0,
        **options: object,
    ) -> SippResult:
        """SIPp as the trunk (callrec trusts its address: no digest) calling `callee`."""
        return run_sipp(
            "uac_auth_pcap.xml",
            work_dir=work_dir,
            timeout_s=timeout_s,
            remote=self.sip_address,
            local_port=self.trunk_port,
            media_port=free_port(even=True, span=4),
            callee=callee,
            caller=caller,
            **options,
        )

    def dial_args(
        self,
        extension: str,
        password: str,
        *options: str,
        callee: str = TRUNK_NUMBER,
        timeout_s: float = 30.0,
    ) -> list[str]:
        """`callrec phone` arguments: `extension` calls `callee` through callrec."""
        return phone_dial_args(
            self.sip_address,
            extension,
            "--password",
            password,
            "--timeout",
            f"{timeout_s:g}",
            *options,
            callee=callee,
        )

    def trunk_phone_args(self, *options: str, calls: int = 1, timeout_s: float = 30.0) -> list[str]:
        """`callrec phone` arguments: a phone answering `calls` calls on the trunk's address."""
        return phone_answer_args(
            self.sip_address,
            TRUNK_NUMBER,
            "--local-port",
            str(self.trunk_port),
            "--calls",
            str(calls),
            "--timeout",
            f"{timeout_s:g}",
            *options,
        )

    def registered_phone_args(
        self,
        extension: str,
        password: str,
        *options: str,
        calls: int = 1,
        timeout_s: float = 30.0,
    ) -> list[str]:
        """`callrec phone` arguments: `extension` registers at callrec and answers `calls`."""
        return phone_answer_args(
            self.sip_address,
            extension,
            "--register",
            "--password",
            password,
            "--calls",
            str(calls),
            "--timeout",
            f"{timeout_s:g}",
            *options,
        )

    def environment(self) -> dict[str, str]:
        """The environment callrec's processes run in."""
        return {**os.environ, **self.extra_env}

    def start(self, timeout: float = 15.0) -> None:
        env = self.environment()
        env.setdefault("CALLREC_LOG_LEVEL", "INFO")
        self.process = start_serve(
            self.config_path, self.log_path, env, HOST, self.sip_port, timeout
        )

    def stop(self) -> None:
        if self.process is None:
            return
        stop_by_pid(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_serve(
    config_path: Path,
    log_path: Path,
    env: dict[str, str],
    host: str,
    sip_port: int,
    timeout: float,
) -> subprocess.Popen[bytes]:
    """`callrec serve --config config_path`, its output appended to `log_path`, once it
    answers an OPTIONS on `host`:`sip_port`; its log in the error when it exits or never
    answers within `timeout`."""

    def log() -> str:
        return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""

    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [*CALLREC, "serve", "--config", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def answering() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"callrec serve on {host}:{sip_port} exited early:\n{log()}")
        return sip_options(sip_port, timeout=0.3, host=host) is not None

    try:
        wait_until(answering, timeout=timeout, what=f"callrec serve on {host} up", interval=0.05)
    except WaitTimeout as exc:
        stop_by_pid(process)
        raise WaitTimeout(f"callrec serve: {exc}\n{log()}") from None
    return process


def make_server(
    root: Path,
    extra_config: str = "",
    *,
    sipp: bool = False,
    rtp_ports: int = 400,
    media_config: str = "",
) -> CallrecServer:
    """A `callrec serve` (not started) on free ports; `sipp=True` offers MD5 first for SIPp."""
    rtp_first = free_port(even=True, span=rtp_ports)
    return CallrecServer(
        root=root,
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=rtp_first,
        rtp_last=rtp_first + rtp_ports - 1,
        extra_config=extra_config,
        sip_config=SIPP_DIGEST_CONFIG if sipp else "",
        media_config=media_config,
    )


def phone_dial_args(
    via: str, extension: str, *options: str, callee: str = TRUNK_NUMBER
) -> list[str]:
    """`callrec phone` arguments: `extension` calls `callee` through `via` (HOST:PORT)."""
    return ["dial", callee, "--via", via, "--as", extension, *options]


def phone_answer_args(via: str, extension: str, *options: str) -> list[str]:
    """`callrec phone` arguments: `extension` answers calls coming from `via` (HOST:PORT)."""
    return ["answer", "--via", via, "--as", extension, *options]
