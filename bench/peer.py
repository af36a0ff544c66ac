"""The same held load as bench/calls.py through Kamailio and rtpengine, the known-good peer.

Kamailio 5.6 (Debian ``kamailio``, ``kamailio-sqlite-modules``) runs bench/peer/kamailio.cfg:
every INVITE is challenged and checked against a subscriber table (auth_db on SQLite,
one user, the bench phone's credentials), Record-Route, and the media anchored in
rtpengine through its ng protocol. rtpengine 10.5 (Debian ``rtpengine-daemon``) forwards
in userspace (``--table=-1``, no kernel module) and records every call to pcap
(``--recording-method=pcap``, ``record-call=yes`` in the offer and answer). Both are
started on loopback with their own ports and ended by PID.

The figures are those of bench/calls.py (the code is shared), measured over the tree of
both processes: Kamailio's main process with its workers, and rtpengine. "samples
written %" is the RTP packets in rtpengine's pcaps against the packets the relay
received (both legs); a pcap keeps packets, not decoded samples, so it is the
closest like-for-like figure to callrec's recorded WAV length.

Run from the repository root, as root (nftables)::

    python -m bench.peer --concurrency 100,200,300,400,500 --hold 30 --repeat 2
    python -m bench.peer --concurrency 20 --hold 5 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.calls import (
    PHONE_EXTENSION,
    PHONE_PASSWORD,
    LevelPlan,
    Ports,
    RunFigures,
    add_load_options,
    check_options,
    drive_load,
    load_average,
    run_levels,
)
from testkit.harness import sip_options
from testkit.processes import stop_by_pid
from testkit.sipp_runner import scenario_path

CONFIG_TEMPLATE = Path(__file__).resolve().parent / "peer" / "kamailio.cfg"
KAMAILIO_SCHEMA = Path("/usr/share/kamailio/db_sqlite")
# Kamailio's SIP workers; rtpengine takes one thread per CPU by default.
KAMAILIO_CHILDREN = 4


def peer_missing() -> str | None:
    """None if Kamailio (with SQLite) and rtpengine are installed, else what is missing."""
    for program, package in (("kamailio", "kamailio"), ("rtpengine", "rtpengine-daemon")):
        if shutil.which(program) is None:
            return (
                f"{program} is not installed (Debian package {package}; scripts/setup.sh --bench)"
            )
    if not (KAMAILIO_SCHEMA / "auth_db-create.sql").is_file():
        return "Kamailio's SQLite schema is missing (Debian package kamailio-sqlite-modules)"
    return None


def subscriber_database(path: Path) -> Path:
    """Kamailio's version and subscriber tables with the bench phone's user in it."""
    with sqlite3.connect(path) as database:
        for schema in ("standard-create.sql", "auth_db-create.sql"):
            database.executescript((KAMAILIO_SCHEMA / schema).read_text())
        database.execute(
            "INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
            (PHONE_EXTENSION, "127.0.0.1", PHONE_PASSWORD),
        )
    return path


def kamailio_config(root: Path, ports: Ports, database: Path) -> Path:
    text = CONFIG_TEMPLATE.read_text()
    for marker, value in {
        "CHILDREN": str(KAMAILIO_CHILDREN),
        "SIP_PORT": str(ports.sip),
        "DB_PATH": str(database),
        "CONTROL_PORT": str(ports.control),
        "TRUNK_PORT": str(ports.trunk),
    }.items():
        text = text.replace("{{" + marker + "}}", value)
    if "{{" in text:
        raise RuntimeError(f"{CONFIG_TEMPLATE}: a marker is left unfilled")
    path = root / "kamailio.cfg"
    path.write_text(text)
    return path


def ng_ping(port: int, timeout: float) -> bool:
    """True once rtpengine answers an ng "ping" on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        while time.monotonic() < deadline:
            sock.sendto(b"bench d7:command4:pinge", ("127.0.0.1", port))
            sock.settimeout(0.3)
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            return b"pong" in reply
    return False


class PeerStack:
    """rtpengine and Kamailio running on the run's ports; `stop()` ends both by PID."""

    def __init__(self, root: Path, ports: Ports) -> None:
        self.root = root
        self.ports = ports
        self.recordings = root / "recordings"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        ports = self.ports
        self._spawn(
            "rtpengine",
            [
                "rtpengine",
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--table=-1",
                "--interface=127.0.0.1",
                f"--listen-ng=127.0.0.1:{ports.control}",
                f"--port-min={ports.relay_first}",
                f"--port-max={ports.relay_last}",
                f"--recording-dir={self.recordings}",
                "--recording-method=pcap",
                "--delete-delay=0",
                f"--pidfile={self.root / 'rtpengine.pid'}",
            ],
        )
        if not ng_ping(ports.control, timeout):
            raise RuntimeError(f"rtpengine did not answer ng ping:\n{self.log('rtpengine')}")
        database = subscriber_database(self.root / "subscribers.sqlite")
        config = kamailio_config(self.root, ports, database)
        self._spawn(
            "kamailio",
            [
                "kamailio",
                "-f",
                str(config),
                "-DD",
                "-E",
                "-m",
                "256",
                "-M",
                "16",
                "-Y",
                str(self.root),
                "-P",
                str(self.root / "kamailio.pid"),
            ],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes["kamailio"].poll() is not None:
                raise RuntimeError(f"kamailio exited:\n{self.log('kamailio')}")
            if sip_options(ports.sip, timeout=0.3) is not None:
                return
        raise RuntimeError(f"kamailio did not answer OPTIONS:\n{self.log('kamailio')}")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes.values()]

    def labels(self) -> dict[int, str]:
        return {process.pid: name for name, process in self.processes.items()}

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_by_pid(process)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def proxied_trunk_scenario(directory: Path) -> Path:
    """uas_echo.xml that copies the Record-Route into its answers, as a UAS behind a proxy must.

    callrec is a B2BUA and sends none, so the shared scenario leaves it out.
    """
    text = scenario_path("uas_echo.xml").read_text()
    contact = "[last_CSeq:]\n      Contact: <sip:[local_ip]:[local_port];transport=[transport]>"
    if contact not in text:
        raise RuntimeError("uas_echo.xml changed: no Contact after [last_CSeq:]")
    text = text.replace(
        contact, contact.replace("[last_CSeq:]", "[last_CSeq:]\n      [last_Record-Route:]")
    )
    path = directory / "uas_echo_proxied.xml"
    path.write_text(text)
    return path


def pcap_packet_count(path: Path) -> int:
    """Records in a libpcap file, whatever its link type."""
    data = path.read_bytes()
    if len(data) < 24 or data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
        return 0
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    count, offset = 0, 24
    while offset + 16 <= len(data):
        captured = struct.unpack_from(endian + "IIII", data, offset)[2]
        offset += 16 + captured
        if offset <= len(data):
            count += 1
    return count


def recorded_packets(recordings: Path) -> tuple[int, int]:
    """(packets in all pcaps, number of pcap files) under rtpengine's recording dir."""
    files = sorted(recordings.rglob("*.pcap"))
    return sum(pcap_packet_count(path) for path in files), len(files)


def run_peer(
    plan: LevelPlan, ports: Ports, root: Path, run: int, sniffer: bool, trace_sip: bool = False
) -> RunFigures:
    """One held run through a fresh Kamailio + rtpengine; both are stopped on return."""
    figures = RunFigures("kamailio+rtpengine", plan.concurrency, run, load_average(), plan)
    stack = PeerStack(root / "peer", ports)
    try:
        stack.start()
        drive_load(
            figures,
            ports,
            root,
            stack.pids,
            stack.labels(),
            sniffer=sniffer,
            trace_sip=trace_sip,
            trunk_scenario=str(proxied_trunk_scenario(root)),
        )
    finally:
        stack.stop()
    packets, files = recorded_packets(stack.recordings)
    received = figures.counts.get("phone_to_relay", 0) + figures.counts.get("trunk_to_relay", 0)
    figures.written_percent = 100 * packets / received if received else 0.0
    if files < figures.successful:
        figures.notes.append(f"{files} pcap recordings for {figures.successful} calls")
    for name in stack.processes:
        problems = [
            line
            for line in stack.log(name).splitlines()
            if " ERROR" in line or "CRIT" in line or "ERR:" in line
        ]
        if problems:
            figures.notes.append(f"{len(problems)} error lines in {name}.log (last 3000 chars):")
            figures.notes.extend(f"    {line}" for line in problems[:5])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_load_options(parser)
    args = parser.parse_args(argv)
    missing = peer_missing()
    if missing:
        parser.exit(2, f"{parser.prog}: {missing}\n")
    check_options(parser, args)

    def run_one(plan: LevelPlan, ports: Ports, root: Path, run: int) -> RunFigures:
        return run_peer(plan, ports, root, run, args.sniffer, args.trace_sip)

    return run_levels(args, "Kamailio + rtpengine (pcap recording)", run_one)


if __name__ == "__main__":
    sys.exit(main())
