"""Run SIPp (Debian ``sip-tester``) as a bounded subprocess and read back its results.

Every run has a call limit (``-m``) and a global timeout (``-timeout``, plus a hard
``subprocess`` deadline that kills the process by its PID), and all traces go into one
work directory: the statistics CSV (``-trace_stat``), the final screens
(``-trace_screen``), unexpected messages (``-trace_err``), optionally every SIP message
(``-trace_msg``) and each call's response time, INVITE to 200 (``-trace_rtt``).

The scenarios live in ``testkit/sipp/``. The command lines this module builds, on
loopback, are (ports are examples; ``-nostdin`` and the trace options are always added)::

    # the trunk: answers, echoes RTP, waits for the BYE
    sipp -sf testkit/sipp/uas_echo.xml -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 16000 \\
         -rtp_echo -m 1 -timeout 30s -timeout_error
    # a phone: INVITE (answers a 407 with -au/-ap), plays g711a.pcap, BYE after -d ms
    sipp -sf testkit/sipp/uac_auth_pcap.xml 127.0.0.1:5060 -i 127.0.0.1 -p 5070 \\
         -mi 127.0.0.1 -mp 16100 -s 300 -key caller 201 -au 201 -ap secret \\
         -key pcap /usr/share/sip-tester/g711a.pcap -d 7500 -m 1 -r 10 -l 20 \\
         -timeout 30s -timeout_error
    # uac_cancel.xml (-d = ringing time before the CANCEL, expects 487),
    # uac_busy.xml (expects 486), uac_hold.xml (-d = time on hold; the answers must be
    # a=recvonly|inactive, then a=sendrecv), uac_dtmf.xml (-key dtmf_first/-key
    # dtmf_second pcaps, default "*" then "1", then -d ms): same options as
    # uac_auth_pcap.xml. Every UAC works with and without a 407/401 challenge.
    # uas_busy.xml (486), uas_ringing.xml (180, then 200 to CANCEL + 487),
    # uas_early_media.xml (183 with SDP, -d ms, 200), uas_auth_echo.xml (407 first,
    # checks the shape of Proxy-Authorization), uas_registrar.xml (REGISTER: 401, then
    # <verifyauth/> of -key auth_user/-key auth_password, 200; then the un-REGISTER):
    # same options as uas_echo.xml (the runner always passes every -key).

Note for digest checkers: SIPp's [authentication] puts ``uri="sip:HOST:PORT"`` (the
remote address, without the user) in the digest, not the Request-URI; a server must
hash the ``uri`` parameter as sent.

SIPp counts SIP only; RTP is counted with ``tests/e2e/rtp_counter.py``. SIPp's exit
code: 0 all calls succeeded, 1 at least one failed, 97 internal exit, 99 no call
processed, 255/254 (-1/-2) fatal error or could not bind.

Python::

    uas = start_sipp("uas_echo.xml", local_port=5080, media_port=16000, rtp_echo=True)
    result = run_sipp("uac_auth_pcap.xml", remote="127.0.0.1:5080", local_port=5070,
                      media_port=16100, callee="300", caller="201", password="secret",
                      call_length_ms=7500, calls=1)
    assert result.ok and uas.wait().ok
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testkit.waiting import WaitTimeout, port_bound, wait_until

SIPP = "sipp"
SCENARIO_DIR = Path(__file__).resolve().parent / "sipp"
PCAP_DIR = Path("/usr/share/sip-tester")
G711A_PCAP = PCAP_DIR / "g711a.pcap"
DTMF_STAR_PCAP = PCAP_DIR / "dtmf_2833_star.pcap"
DTMF_ONE_PCAP = PCAP_DIR / "dtmf_2833_1.pcap"
LOOPBACK = "127.0.0.1"
# SIPp's screens and statistics carry the exit reason; its own codes, from `sipp -h`.
EXIT_ALL_SUCCESSFUL = 0
EXIT_SOME_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALL_PROCESSED = 99


def scenario_path(name: str) -> Path:
    """Absolute path of a scenario in testkit/sipp/ (``"uas_echo"`` or ``"uas_echo.xml"``)."""
    path = SCENARIO_DIR / (name if name.endswith(".xml") else f"{name}.xml")
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {path}")
    return path


# Ranges (media, RTP pools) are taken below callrec's default RTP range (20000-29999,
# which a test may serve with) and below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Debian), where no client
# socket of this or another process can take one of their ports between the probe and
# the bind. Under pytest-xdist each worker draws from its own slice of it.
RANGE_LOW, RANGE_HIGH = 10_000, 20_000
_handed_out: list[tuple[int, int]] = []


def _range_slice() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (RANGE_HIGH - RANGE_LOW) // max(1, count)
    low = RANGE_LOW + min(index, count - 1) * width
    return low, low + width


def free_port(kind: int = socket.SOCK_DGRAM, *, even: bool = False, span: int = 1) -> int:
    """A port free on 127.0.0.1 now for UDP and TCP, with ``span`` free consecutive ports.

    ``kind`` is the socket the kernel is asked for a single port with. Media ports are
    asked ``even=True, span=4``: SIPp uses the port and port+2 for its echo and RTCP is
    expected on port+1. Ranges come from below the ephemeral range (see RANGE_LOW), and
    one process gets a range it was handed recently, bound or not, only when its slice
    has no other room.
    """
    if not even and span == 1:
        for _attempt in range(200):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind((LOOPBACK, 0))
                port: int = probe.getsockname()[1]
            if _port_free(port):
                return port
        raise RuntimeError("no free port on 127.0.0.1")
    low, high = _range_slice()
    chooser = random.Random()
    # Ranges handed out earlier may not be bound yet (callrec binds its RTP ports per
    # call): avoid them while the slice has room, forgetting the oldest when it has not.
    for _round in range(8):
        for _attempt in range(100):
            port = chooser.randrange(low, high - span)
            if even and port % 2:
                port += 1
            if any(port < end and start < port + span for start, end in _handed_out):
                continue
            if all(_port_free(candidate) for candidate in range(port, port + span)):
                _handed_out.append((port, port + span))
                del _handed_out[:-64]
                return port
        del _handed_out[: len(_handed_out) // 2 + 1]
    raise RuntimeError(f"no {span} free consecutive ports in {low}-{high} on 127.0.0.1")


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


@dataclass
class SippResult:
    """What one SIPp run did: exit code, call counters and where its traces are."""

    returncode: int
    scenario: str
    command: list[str]
    work_dir: Path
    elapsed_s: float
    statistics: dict[str, str] = field(default_factory=dict)
    screen: str = ""
    errors: str = ""
    response_times_ms: list[float] = field(default_factory=list)
    killed: bool = False

    @property
    def successful_calls(self) -> int:
        """Cumulative SuccessfulCall from the statistics CSV (0 if none was written)."""
        return _int(self.statistics.get("SuccessfulCall(C)"))

    @property
    def failed_calls(self) -> int:
        """Cumulative FailedCall from the statistics CSV."""
        return _int(self.statistics.get("FailedCall(C)"))

    @property
    def created_calls(self) -> int:
        """Calls created (outgoing for a UAC, incoming for a UAS)."""
        return _int(self.statistics.get("TotalCallCreated"))

    @property
    def ok(self) -> bool:
        """Exit code 0, not killed, and no failed call."""
        return self.returncode == EXIT_ALL_SUCCESSFUL and not self.killed and not self.failed_calls

    def summary(self) -> str:
        """One paragraph for an assertion message: exit code, counters, last errors."""
        return (
            f"sipp {self.scenario}: exit {self.returncode}{' (killed)' if self.killed else ''}, "
            f"{self.successful_calls} ok, {self.failed_calls} failed of "
            f"{self.created_calls} in {self.elapsed_s:.1f} s; work dir {self.work_dir}\n"
            f"errors: {self.errors[-2000:]}\nscreen: {self.screen[-3000:]}"
        )


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def sipp_command(
    scenario: str,
    *,
    remote: str | None = None,
    local_ip: str = LOOPBACK,
    local_port: int | None = None,
    media_port: int | None = None,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10.0,
    max_concurrent: int | None = None,
    call_length_ms: int | None = None,
    timeout_s: float = 60.0,
    rtp_echo: bool = False,
    callee: str | None = None,
    caller: str | None = None,
    user: str | None = None,
    password: str | None = None,
    pcap: str | Path | None = None,
    keys: dict[str, str] | None = None,
    trace_messages: bool = False,
    work_dir: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """The SIPp command line for a scenario (a UAC when ``remote`` is given).

    ``calls`` bounds the run (``-m``) and ``timeout_s`` its duration (``-timeout`` with
    ``-timeout_error``). ``caller``/``user``/``password`` feed the UAC scenarios'
    ``[caller]`` key and ``[authentication]`` (``-au``/``-ap``); ``pcap`` is the
    ``[pcap]`` key of uac_auth_pcap.xml (default: SIPp's g711a.pcap).
    """
    path = scenario_path(scenario)
    command = [SIPP, "-sf", str(path)]
    if remote is not None:
        command.append(remote)
    command += ["-i", local_ip, "-mi", local_ip, "-m", str(calls)]
    if local_port is not None:
        command += ["-p", str(local_port)]
    if media_port is not None:
        command += ["-mp", str(media_port)]
    if transport == "tcp":
        command += ["-t", "t1"]
    elif transport != "udp":
        raise ValueError(f"transport {transport!r}: udp or tcp")
    if remote is not None:
        command += ["-r", f"{rate:g}", "-l", str(max_concurrent or max(calls, 1))]
        if rate < 1:
            # SIPp takes integer rates per period: 0.5 calls/s is 1 call every 2000 ms.
            command[-4:-2] = ["-r", "1", "-rp", f"{int(1000 / rate)}"]
    if call_length_ms is not None:
        command += ["-d", str(call_length_ms)]
    command += ["-timeout", f"{timeout_s:g}s", "-timeout_error"]
    if rtp_echo:
        command.append("-rtp_echo")
    if callee is not None:
        command += ["-s", callee]
    all_keys = {
        "caller": caller or user or "sipp",
        "pcap": str(pcap or G711A_PCAP),
        "dtmf_first": str(DTMF_STAR_PCAP),
        "dtmf_second": str(DTMF_ONE_PCAP),
        "auth_user": user or caller or "sipp",
        "auth_password": password or "",
    }
    all_keys.update(keys or {})
    for key, value in all_keys.items():
        command += ["-key", key, value]
    if user or caller:
        command += ["-au", user or caller or ""]
    if password is not None:
        command += ["-ap", password]
    stem = path.stem
    command += [
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(work_dir / f"{stem}.csv"),
        "-fd",
        "1",
        "-trace_screen",
        "-screen_file",
        str(work_dir / f"{stem}.screen"),
        "-trace_err",
        "-error_file",
        str(work_dir / f"{stem}.errors"),
        "-trace_rtt",
        "-rtt_freq",
        "1",
    ]
    if trace_messages:
        command += ["-trace_msg", "-message_file", str(work_dir / f"{stem}.messages")]
    command += list(extra)
    return command


class SippProcess:
    """A running SIPp: ``wait()`` for it to end by itself, or ``stop()`` it (by PID)."""

    def __init__(self, scenario: str, command: list[str], work_dir: Path, timeout_s: float):
        self.scenario = scenario
        self.command = command
        self.work_dir = work_dir
        self.timeout_s = timeout_s
        self.started_at = time.monotonic()
        self._output = open(work_dir / f"{Path(scenario).stem}.stdout", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        self._killed = False

    @property
    def pid(self) -> int:
        """PID of the sipp process."""
        return self.process.pid

    def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait for SIPp to exit (it has ``-m`` and ``-timeout``); kill it past the deadline."""
        # SIPp's own -timeout should end it first; this is the backstop.
        budget = timeout_s if timeout_s is not None else self.timeout_s + 10.0
        try:
            self.process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            self._kill()
        return self._result()

    def stop(self, grace_s: float = 5.0) -> SippResult:
        """Ask SIPp to finish (SIGUSR1: no new calls, let current ones end), then kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._kill()
        return self._result()

    def _kill(self) -> None:
        self._killed = True
        self.process.kill()
        self.process.wait(timeout=10)

    def _result(self) -> SippResult:
        self._output.close()
        stem = Path(self.scenario).stem
        returncode = self.process.returncode
        # Popen reports SIPp's exit(-1)/exit(-2) as 255/254.
        return SippResult(
            returncode=returncode if returncode is not None else -9,
            scenario=self.scenario,
            command=self.command,
            work_dir=self.work_dir,
            elapsed_s=time.monotonic() - self.started_at,
            statistics=read_statistics(self.work_dir / f"{stem}.csv"),
            screen=_read_text(self.work_dir / f"{stem}.screen")
            or _read_text(self.work_dir / f"{stem}.stdout"),
            errors=_read_text(self.work_dir / f"{stem}.errors"),
            response_times_ms=read_response_times(self.work_dir, stem),
            killed=self._killed,
        )

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self._kill()
        self._output.close()


def start_sipp(
    scenario: str,
    *,
    work_dir: Path | str | None = None,
    timeout_s: float = 60.0,
    ready_wait_s: float = 10.0,
    **options: object,
) -> SippProcess:
    """Start SIPp in the background (a UAS, or a UAC to run beside others).

    ``options`` are those of :func:`sipp_command`. With a ``local_port``, the call
    returns once SIPp has bound it (at most ``ready_wait_s``; 0 does not wait), so a
    UAC started next finds the UAS listening; it raises if SIPp died first (a bad
    scenario or a port in use) or never bound the port.
    """
    directory = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="sipp-"))
    directory.mkdir(parents=True, exist_ok=True)
    command = sipp_command(scenario, work_dir=directory, timeout_s=timeout_s, **options)  # type: ignore[arg-type]
    process = SippProcess(scenario, command, directory, timeout_s)
    local_port = options.get("local_port")
    if ready_wait_s and isinstance(local_port, int):
        transport = "tcp" if options.get("transport") == "tcp" else "udp"
        wait_until_bound(process, local_port, transport, timeout=ready_wait_s)
    return process


def wait_until_bound(
    process: SippProcess, port: int, transport: str = "udp", *, timeout: float = 10.0
) -> None:
    """Return once SIPp `process` has bound `port`, so a UAC started next finds it
    listening. Stops it and raises RuntimeError if it died first (a bad scenario or a
    port in use) or did not bind within `timeout` s."""
    try:
        wait_until(
            lambda: process.process.poll() is not None or port_bound(port, transport),
            timeout=timeout,
            what=f"SIPp bound to {transport} port {port}",
            interval=0.02,
        )
    except WaitTimeout as exc:
        process.stop(grace_s=1.0)
        raise RuntimeError(f"{exc}\n{process.command}") from None
    if process.process.poll() not in (None, EXIT_ALL_SUCCESSFUL):
        result = process.wait()
        raise RuntimeError(f"sipp exited at start:\n{result.summary()}\n{process.command}")


def run_sipp(
    scenario: str,
    *,
    work_dir: Path | str | None = None,
    timeout_s: float = 60.0,
    **options: object,
) -> SippResult:
    """Run SIPp to its end (``-m`` calls or ``timeout_s``) and return its result."""
    process = start_sipp(
        scenario, work_dir=work_dir, timeout_s=timeout_s, ready_wait_s=0, **options
    )
    return process.wait()


def read_statistics(path: Path) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV as {column: value} ({} if absent)."""
    text = _read_text(path)
    if not text.strip():
        return {}
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def read_response_times(work_dir: Path, stem: str) -> list[float]:
    """Every response time (ms, rtd="true" of the scenario: INVITE to 200) SIPp traced."""
    times: list[float] = []
    for path in sorted(work_dir.glob(f"{stem}_*_rtt.csv")):
        for row in csv.reader(io.StringIO(_read_text(path)), delimiter=";"):
            # Columns: Date_ms;response_time_ms;rtd_no
            if len(row) >= 2:
                try:
                    times.append(float(row[1]))
                except ValueError:
                    continue
    return times


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


TELEPHONE_EVENT_CODES = {
    **{str(digit): digit for digit in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}


def write_rtp_pcap(
    path: str | Path,
    *,
    duration_s: float,
    digits: Sequence[tuple[float, str]] = (),
    digit_ms: int = 100,
    audio_payload_type: int = 8,
    event_payload_type: int = 101,
    ssrc: int = 0x43414C4C,
) -> int:
    """Write a pcap of one phone's RTP stream for ``play_pcap_audio``; return its packet count.

    20 ms G.711 silence packets (A-law 0xD5 or mu-law 0xFF) for ``duration_s``, and at
    each ``(seconds, digit)`` an RFC 4733 event of ``digit_ms`` in place of the audio
    (updates every 20 ms, the end packet sent three times), with one SSRC and continuous
    sequence numbers and timestamps, as a real phone sends them. Unlike replaying
    SIPp's own dtmf_2833_*.pcap twice, each digit here is a distinct event.
    """
    silence = b"\xd5" if audio_payload_type == 8 else b"\xff"
    packet_ms = 20
    samples_per_packet = 8 * packet_ms
    total_packets = round(duration_s * 1000 / packet_ms)
    event_starts = {round(at * 1000 / packet_ms): digit for at, digit in digits}
    event_packets = max(1, digit_ms // packet_ms)
    packets: list[_PcapRtp] = []
    index = 0
    sequence = 0
    while index < total_packets:
        timestamp = index * samples_per_packet
        digit = event_starts.get(index)
        if digit is None:
            audio = silence * samples_per_packet
            packets.append(
                _PcapRtp(index == 0, audio_payload_type, sequence, timestamp, timestamp, audio)
            )
            sequence += 1
            index += 1
            continue
        code = TELEPHONE_EVENT_CODES[digit.upper()]
        for step in range(event_packets):
            duration = (step + 1) * samples_per_packet
            end = step == event_packets - 1
            event = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
            due = timestamp + step * samples_per_packet
            # RFC 4733 2.5.1.4: the end packet is sent three times, same sequence number.
            for _ in range(3 if end else 1):
                packets.append(
                    _PcapRtp(step == 0, event_payload_type, sequence, timestamp, due, event)
                )
            sequence += 1
        index += event_packets
    with open(path, "wb") as pcap:
        pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for packet in packets:
            rtp = struct.pack(
                "!BBHII",
                0x80,
                (0x80 if packet.marker else 0) | packet.payload_type,
                packet.sequence & 0xFFFF,
                packet.timestamp & 0xFFFFFFFF,
                ssrc,
            )
            frame = _udp_frame(rtp + packet.payload, source_port=40000, destination_port=40002)
            seconds, micros = divmod(packet.due_samples * 125, 1_000_000)
            pcap.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            pcap.write(frame)
    return len(packets)


@dataclass(frozen=True)
class _PcapRtp:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    due_samples: int  # send time on the 8 kHz media clock
    payload: bytes


def _udp_frame(payload: bytes, *, source_port: int, destination_port: int) -> bytes:
    """An Ethernet/IPv4/UDP frame 127.0.0.1 -> 127.0.0.1 around ``payload``."""
    udp_length = 8 + len(payload)
    udp = struct.pack("!HHHH", source_port, destination_port, udp_length, 0) + payload
    total_length = 20 + udp_length
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total_length,
        0,
        0,
        64,
        17,
        0,
        socket.inet_aton(LOOPBACK),
        socket.inet_aton(LOOPBACK),
    )
    checksum = _ip_checksum(header)
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    ethernet = b"\x00" * 12 + b"\x08\x00"
    return ethernet + header + udp


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def environment_ok() -> str | None:
    """None if sipp and its pcaps are installed, else what is missing (for a clear failure)."""
    from shutil import which

    if which(SIPP) is None:
        return "sipp is not installed (Debian package sip-tester)"
    if not G711A_PCAP.is_file():
        return f"{G711A_PCAP} missing (Debian package sip-tester)"
    if os.geteuid() != 0:
        return "RTP counting needs root (AF_PACKET socket)"
    return None
