"""Call-path load bench: SIPp calls with audio held at full concurrency through `callrec serve`.

For each concurrency level (and each of ``--repeat`` runs) the bench starts a fresh
`callrec serve` (so CPU, recordings and log errors belong to that run alone), a SIPp
trunk (uas_echo.xml with ``-rtp_echo``) and a SIPp phone whose calls are *held*:

* ``calls = concurrency``, ``rate = --setup-rate`` calls/s, so the ramp lasts
  ``ramp = concurrency / rate`` seconds;
* each call lasts ``ramp + hold + 2`` s, so from ``ramp + 1`` s to ``ramp + 1 + hold`` s
  after the first INVITE every call is up: that is the *hold window*, where the steady
  state figures (CPU, packets/s, the concurrency actually held) are taken. Calls then end
  over another ``ramp``.

Every call streams G.711 A-law RTP (SIPp ``rtp_stream``, 20 ms, 50 packets/s, looping the
audio of SIPp's g711a.pcap for as long as the call lasts) from the phone's one media
port; the trunk echoes every packet it reads back to its source. The stream is paused
200 ms before the BYE so that hang-up races do not count as loss.

RTP is counted by the kernel: an nftables table of this bench (``inet
callrec_bench_<pid>``, input hook, counters only, removed at the end) counts the UDP
packets of four flows on ``lo``: phone to relay, relay to trunk, trunk (echo) to relay,
relay to phone. "RTP forward %" is relay-to-trunk against phone-to-relay, "RTP back %" is
relay-to-phone against what the trunk echoed (the echo proves SIPp read each packet).
Kernel counters cost no CPU beside the load; a Python sniffer
(testkit/rtp_counter.py) would handle every packet in the interpreter, 100 000 packets/s
at 500 calls on the same two cores, and so slow down what it measures.
``--sniffer`` runs it beside the counters anyway and prints both, with its kernel drops,
as a check of either. SIPp's own "Total RTP pckts sent" is compared with the phone's
count too.

Once a second a sampler thread reads every process of the measured tree (the `callrec
serve` process and all its descendants; for bench/peer.py Kamailio's and rtpengine's)
from /proc, the SIPp statistics (CurrentCall of phone and trunk) and the counters:

* held min/median: the trunk's CurrentCall (calls really set up through the proxy)
  sampled each second inside the hold window;
* CPU s per call-minute: CPU of the whole tree (user + system, children included) over
  the hold window divided by the call-minutes held in it (mean held calls x window);
  "whole" is the run's CPU over all answered call-minutes, ramps included;
* peak CPU %: the busiest one-second window of each process (100 % = one core);
* packets/s: RTP packets into and out of the relay per second in the hold window;
* setup p50/p99: SIPp's timer from the authenticated INVITE to its 200.

Recorded mode records every call (mono WAV, no announcement: a prompt would replace
relayed packets); "samples written %" is the recordings' length against the calls' media
time from the CDRs.

``--cluster N`` runs the same load through Kamailio to N nodes (testkit/cluster.py: one
PostgreSQL, one SeaweedFS S3 store, Kamailio on 127.0.0.10, nodes on 127.0.0.2 ...,
one media worker each, recordings uploaded to the bucket), started fresh for each run.
The measured tree is then every node, Kamailio, PostgreSQL and SeaweedFS; the nodes'
RTP ranges lie one after the other in the relay range, which the counters count as one.

Run from the repository root, as root (nftables)::

    python -m bench.calls --mode recorded --concurrency 100,200,300,400,500 --hold 30 --repeat 2
    python -m bench.calls --mode recorded --concurrency 20 --hold 5 --repeat 1   # smoke
    python -m bench.calls --mode recorded --cluster 2 --concurrency 20 --hold 5 --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from testkit.cluster import Cluster, cluster_missing
from testkit.harness import SIPP_DIGEST_CONFIG, CallrecServer, free_port
from testkit.rtp_counter import RtpCounter
from testkit.sipp_runner import (
    G711A_PCAP,
    SippProcess,
    SippResult,
    environment_ok,
    scenario_path,
    start_sipp,
)

LOOPBACK = "127.0.0.1"
PHONE_EXTENSION = "201"
PHONE_PASSWORD = "bench-201"
CALLEE = "300"
# Setup delay slack on each side of the hold window.
HOLD_MARGIN_S = 1.0
# The phone stops its stream this long before its BYE.
QUIET_BEFORE_BYE_MS = 200
PACKETS_PER_SECOND = 50  # rtp_stream PCMA: 20 ms packets
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback")
FLOWS = ("phone_to_relay", "relay_to_trunk", "trunk_to_relay", "relay_to_phone")


# ---------------------------------------------------------------- plan and ports


@dataclass(frozen=True)
class LevelPlan:
    """SIPp's rate and call length that hold `concurrency` calls up for `hold_s`."""

    concurrency: int
    hold_s: float
    setup_rate: float

    @property
    def ramp_s(self) -> float:
        return self.concurrency / self.setup_rate

    @property
    def call_length_s(self) -> float:
        return self.ramp_s + self.hold_s + 2 * HOLD_MARGIN_S

    @property
    def window(self) -> tuple[float, float]:
        """Seconds after the phone started between which every call is up."""
        start = self.ramp_s + HOLD_MARGIN_S
        return start, start + self.hold_s

    @property
    def timeout_s(self) -> float:
        return 2 * self.ramp_s + self.call_length_s + 60


@dataclass(frozen=True)
class Ports:
    """Every loopback port of one run. `media` is SIPp's block: trunk +0/+2, phone +4."""

    sip: int
    trunk: int
    phone: int
    portal: int
    control: int  # the peer's rtpengine ng port (unused by callrec)
    media: int
    relay_first: int
    relay_last: int

    @property
    def trunk_media(self) -> int:
        return self.media

    @property
    def phone_media(self) -> int:
        return self.media + 4


def relay_port_count(concurrency: int) -> int:
    """Relay ports for `concurrency` calls: two legs of RTP+RTCP each, and slack."""
    return 4 * concurrency + 200


def plan_ports(args: argparse.Namespace, concurrency: int) -> Ports:
    """Ports from --base-port (laid out from it), explicit options, or free ones."""
    # Through Kamailio (--cluster N) each node gets a whole level's range: the Call-ID
    # hash need not spread the calls evenly.
    count = relay_port_count(concurrency) * (getattr(args, "cluster", 0) or 1)
    base: int | None = args.base_port
    if base is not None:
        layout = Ports(base, base + 1, base + 2, base + 3, base + 4, base + 10, base + 20, 0)
        layout = Ports(**{**layout.__dict__, "relay_last": layout.relay_first + count - 1})
    else:
        first = free_port(even=True, span=count)
        layout = Ports(
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(even=True, span=8),
            first,
            first + count - 1,
        )
    relay_first, relay_last = layout.relay_first, layout.relay_last
    if args.relay_ports:
        relay_first, relay_last = args.relay_ports
    return Ports(
        sip=args.sip_port or layout.sip,
        trunk=args.trunk_port or layout.trunk,
        phone=args.phone_port or layout.phone,
        portal=layout.portal,
        control=args.control_port or layout.control,
        media=args.media_port or layout.media,
        relay_first=relay_first,
        relay_last=relay_last,
    )


def parse_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: FIRST-LAST, e.g. 30000-32199") from None
    if not 1024 <= low < high < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: 1024 <= FIRST < LAST < 65536")
    return low, high


# ---------------------------------------------------------------- kernel RTP counters


class NftCounters:
    """nftables counters of the four RTP flows through a relay, in a table of their own.

    The table only counts (input hook, policy accept): it changes no packet's fate. It
    is deleted on exit, also after an error.
    """

    def __init__(self, phone_media: int, trunk_media: int, relay: tuple[int, int]) -> None:
        self.table = f"callrec_bench_{os.getpid()}"
        relay_set = f"{relay[0]}-{relay[1]}"
        self._rules = {
            "phone_to_relay": f"udp sport {phone_media} udp dport {relay_set}",
            "relay_to_trunk": f"udp sport {relay_set} udp dport {trunk_media}",
            "trunk_to_relay": f"udp sport {trunk_media} udp dport {relay_set}",
            "relay_to_phone": f"udp sport {relay_set} udp dport {phone_media}",
        }

    def __enter__(self) -> NftCounters:
        script = [
            f"add table inet {self.table}",
            f"add chain inet {self.table} count "
            "{ type filter hook input priority -400; policy accept; }",
        ]
        for name, match in self._rules.items():
            script.append(f"add counter inet {self.table} {name}")
            script.append(
                f"add rule inet {self.table} count ip saddr 127.0.0.0/8 {match} counter name {name}"
            )
        self._nft("-f", "-", script="\n".join(script) + "\n")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._nft("delete", "table", "inet", self.table, check=False)

    def read(self) -> dict[str, int]:
        """Packets counted so far per flow."""
        listing = json.loads(self._nft("-j", "list", "counters", "table", "inet", self.table))
        counts: dict[str, int] = {}
        for item in listing.get("nftables", []):
            counter = item.get("counter")
            if counter and counter.get("table") == self.table:
                counts[counter["name"]] = int(counter["packets"])
        return counts

    @staticmethod
    def _nft(*args: str, script: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["nft", *args], input=script, capture_output=True, text=True, timeout=10
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


# ---------------------------------------------------------------- processes and CPU


def process_cpu_s(pid: int) -> tuple[str, float, int]:
    """(name, user+system seconds including reaped children, parent pid) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return name, ticks / os.sysconf("SC_CLK_TCK"), int(fields[1])


def process_tree(roots: Sequence[int]) -> dict[int, tuple[str, float]]:
    """{pid: (name, cpu s)} of `roots` and all their descendants alive now."""
    table: dict[int, tuple[str, float, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = process_cpu_s(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    children: dict[int, list[int]] = {}
    for pid, (_name, _cpu, parent) in table.items():
        children.setdefault(parent, []).append(pid)
    tree: dict[int, tuple[str, float]] = {}
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        if pid in tree:
            continue
        tree[pid] = table[pid][:2]
        pending.extend(children.get(pid, []))
    return tree


def sipp_current_calls(path: Path) -> int | None:
    """CurrentCall of the last row of a SIPp -trace_stat CSV (None before the first)."""
    try:
        with path.open("rb") as stats:
            header = stats.readline().decode(errors="replace").strip().split(";")
            stats.seek(0, os.SEEK_END)
            size = stats.tell()
            stats.seek(max(0, size - 8192))
            lines = stats.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    if len(lines) < 1 or "CurrentCall" not in header:
        return None
    row = lines[-1].split(";")
    if row[0] == header[0]:
        return None
    try:
        return int(row[header.index("CurrentCall")])
    except (ValueError, IndexError):
        return None


@dataclass
class Sample:
    at: float  # seconds since the phone started
    cpu: dict[int, tuple[str, float]]
    phone_calls: int | None
    trunk_calls: int | None
    counts: dict[str, int]


class Sampler:
    """Samples the process tree, SIPp's current calls and the counters once a second."""

    def __init__(
        self,
        roots: Callable[[], Sequence[int]],
        phone_stats: Path,
        trunk_stats: Path,
        counters: NftCounters,
        max_seconds: float,
    ) -> None:
        self.roots = roots
        self.phone_stats = phone_stats
        self.trunk_stats = trunk_stats
        self.counters = counters
        self.max_seconds = max_seconds
        self.samples: list[Sample] = []
        # SIGUSR2 makes SIPp dump its screens, with its rtp_stream packet count.
        self.dump_pid: int | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> Sampler:
        self.started = time.monotonic()
        self.take()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.take()

    def take(self) -> None:
        phone_calls = sipp_current_calls(self.phone_stats)
        # SIGUSR2 would kill a SIPp that has not set its handler yet: wait for its stats.
        if self.dump_pid is not None and phone_calls is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.dump_pid, signal.SIGUSR2)
        self.samples.append(
            Sample(
                at=time.monotonic() - self.started,
                cpu=process_tree(self.roots()),
                phone_calls=phone_calls,
                trunk_calls=sipp_current_calls(self.trunk_stats),
                counts=self.counters.read(),
            )
        )

    def _run(self) -> None:
        deadline = self.started + self.max_seconds
        while not self._stop.wait(1.0) and time.monotonic() < deadline:
            self.take()


def tree_cpu(sample: Sample) -> float:
    return sum(cpu for _name, cpu in sample.cpu.values())


def peak_cpu_by_process(
    samples: Sequence[Sample], labels: dict[int, str]
) -> list[tuple[str, float]]:
    """Each process's busiest one-second window in %, busiest first."""
    peaks: dict[int, float] = {}
    names: dict[int, str] = {}
    for before, after in itertools.pairwise(samples):
        span = after.at - before.at
        if span <= 0:
            continue
        for pid, (name, cpu) in after.cpu.items():
            if pid in before.cpu:
                share = 100 * (cpu - before.cpu[pid][1]) / span
                peaks[pid] = max(peaks.get(pid, 0.0), share)
                names[pid] = labels.get(pid, name)
    return sorted(((names[pid], peak) for pid, peak in peaks.items()), key=lambda p: -p[1])


# ---------------------------------------------------------------- SIPp scenario and audio


def alaw_audio(directory: Path) -> Path:
    """The A-law payloads of SIPp's g711a.pcap as one raw file, for rtp_stream to loop."""
    data = G711A_PCAP.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    payloads = bytearray()
    offset = 24
    while offset + 16 <= len(data):
        captured = struct.unpack_from(endian + "IIII", data, offset)[2]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        udp = 14 + (frame[14] & 0x0F) * 4  # Ethernet, IPv4
        payloads += frame[udp + 8 + 12 :]  # UDP header, RTP header (no CSRC, no extension)
    path = directory / "g711a.al"
    path.write_bytes(bytes(payloads))
    return path


def bench_scenario(directory: Path, audio: Path) -> Path:
    """uac_auth_pcap.xml with named timers and a looping rtp_stream paused before the BYE.

    Timers: "challenge" is INVITE to 407, "setup" the authenticated INVITE to its 200.
    """
    text = scenario_path("uac_auth_pcap.xml").read_text()
    plain_send = '<send retrans="500">'
    first_invite = text.index(plain_send)
    text = (
        text[:first_invite]
        + '<send retrans="500" start_rtd="challenge">'
        + text[first_invite + len(plain_send) :]
    )
    second_invite = text.rindex(plain_send, 0, text.index("CSeq: 2 INVITE"))
    text = (
        text[:second_invite]
        + '<send retrans="500" start_rtd="setup">'
        + text[second_invite + len(plain_send) :]
    )
    for code in ("407", "401"):
        old = f'<recv response="{code}" optional="true" auth="true"'
        if old not in text:
            raise RuntimeError(f"uac_auth_pcap.xml changed: no {old!r}")
        text = text.replace(old, old + ' rtd="challenge"')
    text = text.replace('rtd="true"', 'rtd="setup"')
    play = '<exec play_pcap_audio="[pcap]"/>'
    hold = "<pause/>"
    if play not in text or hold not in text:
        raise RuntimeError("uac_auth_pcap.xml changed: no play_pcap_audio or <pause/>")
    text = text.replace(play, f'<exec rtp_stream="{audio},-1,8"/>')
    text = text.replace(
        hold,
        hold + '\n  <nop><action><exec rtp_stream="pause"/></action></nop>'
        f'\n  <pause milliseconds="{QUIET_BEFORE_BYE_MS}"/>',
    )
    path = directory / "bench_uac_stream.xml"
    path.write_text(text)
    return path


def response_times(work_dir: Path, stem: str) -> dict[str, list[float]]:
    """SIPp -trace_rtt rows by timer name: {name: [ms, ...]}."""
    times: dict[str, list[float]] = {}
    for path in sorted(work_dir.glob(f"{stem}_*_rtt.csv")):
        for row in csv.reader(io.StringIO(path.read_text(errors="replace")), delimiter=";"):
            if len(row) < 3:
                continue
            try:
                value = float(row[1])
            except ValueError:
                continue
            times.setdefault(row[2].strip(), []).append(value)
    return times


def sipp_rtp_sent(result: SippResult) -> int | None:
    """SIPp's own count of rtp_stream packets sent, from the last screen dump that has it.

    SIPp prints the count only while a stream thread runs, so its final screen lacks
    it: the sampler asks for a dump (SIGUSR2) every second instead.
    """
    counts = [int(n) for n in re.findall(r"(\d+) Total RTP pckts sent", result.screen)]
    return max(counts) if counts else None


def first_sipp_error(errors: str) -> str:
    """The first event line of SIPp's error trace (why the first failed call failed)."""
    for line in errors.splitlines():
        if "Aborting call" in line or "failed" in line.lower() or "timed out" in line:
            return line.strip()[:300]
    return ""


# ---------------------------------------------------------------- one run


@dataclass
class RunFigures:
    """The figures of one run of one level, for any proxy."""

    system: str
    concurrency: int
    run: int
    load_before: str
    plan: LevelPlan
    calls: int = 0
    successful: int = 0
    failed: int = 0
    held: list[int] = field(default_factory=list)
    phone_held: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    window_counts: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0
    window_cpu_s: float = 0.0
    run_cpu_s: float = 0.0
    setup_ms: list[float] = field(default_factory=list)
    peaks: list[tuple[str, float]] = field(default_factory=list)
    processes: int = 0
    sipp_sent: int | None = None
    written_percent: float | None = None
    sniffer: dict[str, int] | None = None
    sniffer_drops: int = 0
    notes: list[str] = field(default_factory=list)

    def ratio(self, part: str, whole: str) -> float:
        total = self.counts.get(whole, 0)
        return 100 * self.counts.get(part, 0) / total if total else 0.0

    @property
    def forward_percent(self) -> float:
        return self.ratio("relay_to_trunk", "phone_to_relay")

    @property
    def back_percent(self) -> float:
        return self.ratio("relay_to_phone", "trunk_to_relay")

    @property
    def held_call_minutes(self) -> float:
        return (statistics.fmean(self.held) if self.held else 0.0) * self.window_s / 60

    @property
    def cpu_per_call_minute(self) -> float:
        minutes = self.held_call_minutes
        return self.window_cpu_s / minutes if minutes else float("nan")

    @property
    def run_cpu_per_call_minute(self) -> float:
        minutes = self.successful * self.plan.call_length_s / 60
        return self.run_cpu_s / minutes if minutes else float("nan")

    @property
    def packets_per_second(self) -> float:
        return sum(self.window_counts.values()) / self.window_s if self.window_s else 0.0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sipp_work_dirs(root: Path) -> tuple[Path, Path]:
    trunk, phone = root / "trunk", root / "phone"
    trunk.mkdir(parents=True, exist_ok=True)
    phone.mkdir(parents=True, exist_ok=True)
    return trunk, phone


@contextmanager
def sniffing(enabled: bool, ports: Ports, max_seconds: float) -> Iterator[RtpCounter | None]:
    if not enabled:
        yield None
        return
    # Counted by the SIPp ends (phone and trunk media ports), as the kernel counters are.
    counter = RtpCounter(range(ports.media, ports.media + 8), max_seconds=max_seconds)
    counter.start()
    try:
        yield counter
    finally:
        counter.stop()


def drive_load(
    figures: RunFigures,
    ports: Ports,
    root: Path,
    roots: Callable[[], Sequence[int]],
    labels: dict[int, str],
    *,
    sniffer: bool = False,
    trace_sip: bool = False,
    trunk_scenario: str = "uas_echo.xml",
    remote: str | None = None,
) -> None:
    """Run the held SIPp load against `ports.sip` (or `remote`, "host:port"), filling
    `figures` (everything ends)."""
    plan = figures.plan
    remote = remote or f"{LOOPBACK}:{ports.sip}"
    trunk_dir, phone_dir = sipp_work_dirs(root)
    scenario = bench_scenario(root, alaw_audio(root))
    relay = (ports.relay_first, ports.relay_last)
    with NftCounters(ports.phone_media, ports.trunk_media, relay) as counters:
        trunk = start_sipp(
            trunk_scenario,
            work_dir=trunk_dir,
            timeout_s=plan.timeout_s,
            local_port=ports.trunk,
            media_port=ports.trunk_media,
            rtp_echo=True,
            calls=plan.concurrency,
            trace_messages=trace_sip,
        )
        with trunk, sniffing(sniffer, ports, plan.timeout_s + 60) as sniffed:
            sampler = Sampler(
                roots,
                phone_dir / f"{scenario.stem}.csv",
                trunk_dir / f"{Path(trunk_scenario).stem}.csv",
                counters,
                max_seconds=plan.timeout_s + 30,
            )
            phone: SippProcess = start_sipp(
                str(scenario),
                work_dir=phone_dir,
                timeout_s=plan.timeout_s,
                ready_wait_s=0,
                remote=remote,
                local_port=ports.phone,
                media_port=ports.phone_media,
                callee=CALLEE,
                caller=PHONE_EXTENSION,
                user=PHONE_EXTENSION,
                password=PHONE_PASSWORD,
                extra=["-auth_uri", f"{CALLEE}@{remote}"],
                call_length_ms=round(plan.call_length_s * 1000),
                calls=plan.concurrency,
                rate=plan.setup_rate,
                max_concurrent=plan.concurrency,
                trace_messages=trace_sip,
            )
            sampler.dump_pid = phone.pid
            sampler.start()
            with phone:
                phone_result = phone.wait()
            trunk_result = trunk.wait(timeout_s=15)
            time.sleep(0.5)  # the last echoes in flight
            sampler.stop()
        if sniffed is not None:
            figures.sniffer = {
                "phone_to_relay": sniffed.source_counts.get(ports.phone_media, 0),
                "relay_to_trunk": sniffed.destination_counts.get(ports.trunk_media, 0),
                "trunk_to_relay": sniffed.source_counts.get(ports.trunk_media, 0),
                "relay_to_phone": sniffed.destination_counts.get(ports.phone_media, 0),
            }
            figures.sniffer_drops = sniffed.kernel_drops
    samples = sampler.samples
    start, end = plan.window
    inside = [s for s in samples if start <= s.at <= end]
    figures.calls = plan.concurrency
    figures.successful = phone_result.successful_calls
    figures.failed = phone_result.failed_calls + max(
        0, plan.concurrency - phone_result.created_calls
    )
    figures.held = [s.trunk_calls for s in inside if s.trunk_calls is not None]
    figures.phone_held = [s.phone_calls for s in inside if s.phone_calls is not None]
    figures.counts = samples[-1].counts
    if len(inside) >= 2:
        first, last = inside[0], inside[-1]
        figures.window_s = last.at - first.at
        figures.window_cpu_s = tree_cpu(last) - tree_cpu(first)
        figures.window_counts = {
            flow: last.counts.get(flow, 0) - first.counts.get(flow, 0) for flow in FLOWS
        }
    else:
        figures.notes.append("fewer than two samples in the hold window: no steady-state figures")
    figures.run_cpu_s = tree_cpu(samples[-1]) - tree_cpu(samples[0])
    figures.peaks = peak_cpu_by_process(samples, labels)
    figures.processes = max(len(s.cpu) for s in samples)
    figures.setup_ms = response_times(phone_dir, scenario.stem).get("setup", [])
    figures.sipp_sent = sipp_rtp_sent(phone_result)
    if figures.failed:
        failures = {
            name: value
            for name, value in phone_result.statistics.items()
            if name.startswith("Failed") and name.endswith("(C)") and value not in ("", "0")
        }
        figures.notes.append(f"{figures.failed} failed calls, SIPp counters {failures}")
        error = first_sipp_error(phone_result.errors)
        if error:
            figures.notes.append(f"first: {error}")
    if not trunk_result.ok:
        figures.notes.append(
            f"trunk: exit {trunk_result.returncode}, {trunk_result.failed_calls} failed"
        )
    if figures.held and min(figures.held) < plan.concurrency:
        figures.notes.append(
            f"the concurrency was not held: trunk CurrentCall min {min(figures.held)}"
            f" < {plan.concurrency} in the hold window"
        )
    sent = figures.counts.get("phone_to_relay", 0)
    # SIPp's count comes from its last screen dump, up to a second before the end.
    last_second = plan.concurrency * PACKETS_PER_SECOND * 1.5
    if figures.sipp_sent is not None and not 0 <= sent - figures.sipp_sent <= last_second:
        figures.notes.append(
            f"SIPp says it sent {figures.sipp_sent} RTP packets, the kernel counted {sent}"
        )


# ---------------------------------------------------------------- callrec


def callrec_server(root: Path, ports: Ports, mode: str) -> CallrecServer:
    """A `callrec serve` on the run's ports; every call recorded in `recorded` mode."""
    server = CallrecServer(
        root=root,
        sip_port=ports.sip,
        trunk_port=ports.trunk,
        rtp_first=ports.relay_first,
        rtp_last=ports.relay_last,
        extra_config='[recording]\nannouncement = "none"\n' if mode == "recorded" else "",
        sip_config=SIPP_DIGEST_CONFIG,
        portal_port=ports.portal,
    )
    recording_mode = "always" if mode == "recorded" else "never"
    server.add_user(PHONE_EXTENSION, "Bench Phone", PHONE_PASSWORD, "--mode", recording_mode)
    return server


class _Cli(Protocol):
    def cli(self, *args: str) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class _NodeCli:
    """A cluster node's CLI as `written_percent` reads it (the store is shared)."""

    cluster: Cluster

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, self.cluster.nodes[0].cli(*args), "")


def written_percent(server: _Cli, calls: int, timeout: float = 60.0) -> tuple[float, str]:
    """Recordings' length against the answered calls' media time, and a note if short."""
    deadline = time.monotonic() + timeout
    limit = str(calls + 10)
    while True:
        rows: list[dict[str, Any]] = json.loads(
            server.cli("recordings", "list", "--json", "--limit", limit).stdout
        )
        if all(r["status"] != "recording" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    calls_by_id = {
        row["id"]: row
        for row in json.loads(server.cli("calls", "list", "--json", "--limit", limit).stdout)
    }
    written = media = 0.0
    complete = 0
    for row in rows:
        if row["status"] != "complete":
            continue
        complete += 1
        written += float(row["duration_s"] or 0.0)
        media += float(calls_by_id.get(row["call_id"], {}).get("duration_s") or 0.0)
    note = "" if complete >= calls else f"{complete} complete recordings for {calls} calls"
    return (100 * written / media if media else 0.0), note


def run_callrec(
    plan: LevelPlan,
    ports: Ports,
    root: Path,
    mode: str,
    run: int,
    sniffer: bool,
    trace_sip: bool = False,
) -> RunFigures:
    """One held run through a fresh `callrec serve`; everything is stopped on return."""
    figures = RunFigures(f"callrec {mode}", plan.concurrency, run, load_average(), plan)
    server = callrec_server(root / "callrec", ports, mode)
    try:
        server.start()
        assert server.process is not None
        pid = server.process.pid
        drive_load(
            figures,
            ports,
            root,
            lambda: [pid],
            {pid: "callrec"},
            sniffer=sniffer,
            trace_sip=trace_sip,
        )
        if mode == "recorded":
            figures.written_percent, note = written_percent(server, figures.successful)
            if note:
                figures.notes.append(note)
    finally:
        server.stop()
    problems = [line for line in server.log().splitlines() if LOG_PROBLEM.search(line)]
    if problems:
        figures.notes.append(f"{len(problems)} WARNING/ERROR lines in serve.log:")
        figures.notes.extend(f"    {line}" for line in problems[:5])
    return figures


def run_cluster(
    plan: LevelPlan,
    ports: Ports,
    root: Path,
    mode: str,
    run: int,
    nodes: int,
    sniffer: bool,
    trace_sip: bool = False,
) -> RunFigures:
    """One held run through Kamailio to `nodes` fresh nodes (testkit/cluster.py)."""
    figures = RunFigures(
        f"callrec {mode} x{nodes} via kamailio", plan.concurrency, run, load_average(), plan
    )
    relay_ports = (ports.relay_last - ports.relay_first + 1) // nodes
    recording_mode = "always" if mode == "recorded" else "never"
    cluster = Cluster(
        root / "cluster",
        size=nodes,
        trunk_port=ports.trunk,
        rtp_first=ports.relay_first,
        rtp_ports=relay_ports,
        node_extra='[recording]\nannouncement = "none"\n' if mode == "recorded" else "",
        users=(
            (PHONE_EXTENSION, "--name", "Bench Phone", "--password", PHONE_PASSWORD,
             "--mode", recording_mode),
        ),
    )  # fmt: skip
    try:
        cluster.start()
        assert cluster.proxy is not None
        labels = cluster.processes()
        drive_load(
            figures,
            ports,
            root,
            lambda: list(labels),
            labels,
            sniffer=sniffer,
            trace_sip=trace_sip,
            remote=cluster.proxy.address,
        )
        if mode == "recorded":
            figures.written_percent, note = written_percent(_NodeCli(cluster), figures.successful)
            if note:
                figures.notes.append(note)
    finally:
        cluster.stop()
    for index, node in enumerate(cluster.nodes, 1):
        problems = [line for line in node.log().splitlines() if LOG_PROBLEM.search(line)]
        if problems:
            figures.notes.append(f"{len(problems)} WARNING/ERROR lines in node{index}'s log:")
            figures.notes.extend(f"    {line}" for line in problems[:5])
    return figures


# ---------------------------------------------------------------- output


def percentile(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "-"


TABLE_HEADER = (
    "| system | level | run | load before (1/5/15 min) | held min/median | failed "
    "| RTP forward % | RTP back % | samples written % | setup p50/p99 ms "
    "| CPU s per call-min (hold/whole) | peak CPU % per process | relay packets/s |"
)


def table_row(figures: RunFigures) -> str:
    held = f"{min(figures.held)}/{statistics.median(figures.held):.0f}" if figures.held else "-"
    written = f"{figures.written_percent:.3f}" if figures.written_percent is not None else "-"
    peaks = ", ".join(f"{name} {peak:.0f}" for name, peak in figures.peaks[:3]) or "-"
    return (
        f"| {figures.system} | {figures.concurrency} | {figures.run} | {figures.load_before} "
        f"| {held} | {figures.failed} | {figures.forward_percent:.3f} "
        f"| {figures.back_percent:.3f} | {written} "
        f"| {percentile(figures.setup_ms, 50)}/{percentile(figures.setup_ms, 99)} "
        f"| {figures.cpu_per_call_minute:.3f}/{figures.run_cpu_per_call_minute:.3f} "
        f"| {peaks} | {figures.packets_per_second:.0f} |"
    )


def format_table(results: Sequence[RunFigures]) -> str:
    separator = "|" + "---|" * (TABLE_HEADER.count("|") - 1)
    return "\n".join([TABLE_HEADER, separator, *(table_row(r) for r in results)])


def run_notes(figures: RunFigures) -> list[str]:
    prefix = f"{figures.system} {figures.concurrency} run {figures.run}:"
    counts = ", ".join(f"{flow} {figures.counts.get(flow, 0)}" for flow in FLOWS)
    lines = [
        f"{prefix} {figures.successful}/{figures.calls} ok; ramp {figures.plan.ramp_s:.1f} s at "
        f"{figures.plan.setup_rate:g} calls/s, calls {figures.plan.call_length_s:.1f} s, "
        f"hold window {figures.window_s:.0f} s; phone CurrentCall min "
        f"{min(figures.phone_held) if figures.phone_held else '-'}; "
        f"{figures.processes} processes measured",
        f"    kernel counters: {counts}; SIPp rtp_stream sent {figures.sipp_sent}",
    ]
    if figures.sniffer is not None:
        sniffed = ", ".join(f"{flow} {figures.sniffer.get(flow, 0)}" for flow in FLOWS)
        lines.append(f"    python sniffer: {sniffed}; kernel drops {figures.sniffer_drops}")
    lines.extend(f"    {note}" for note in figures.notes)
    return lines


def print_run(figures: RunFigures) -> None:
    print(table_row(figures), flush=True)
    for line in run_notes(figures):
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- command line


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: positive integers, e.g. 100,200")
    return levels


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by bench.calls and bench.peer."""
    parser.add_argument(
        "--concurrency",
        type=parse_levels,
        default=[100, 200, 300, 400, 500],
        help="comma-separated levels of simultaneous calls",
    )
    parser.add_argument(
        "--hold", type=float, default=30.0, help="seconds every call of a level is up at once"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each level")
    parser.add_argument(
        "--setup-rate", type=float, default=25.0, help="new calls per second during the ramp"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="lay every port out from here (relay from +20)",
    )
    parser.add_argument("--sip-port", type=int, default=None, help="the proxy's SIP port")
    parser.add_argument("--trunk-port", type=int, default=None, help="the SIPp trunk's SIP port")
    parser.add_argument("--phone-port", type=int, default=None, help="the SIPp phone's SIP port")
    parser.add_argument(
        "--media-port",
        type=int,
        default=None,
        help="SIPp media block (even): trunk +0/+2, phone +4",
    )
    parser.add_argument(
        "--control-port", type=int, default=None, help="rtpengine's ng control port (peer)"
    )
    parser.add_argument(
        "--relay-ports", type=parse_range, default=None, help="the relay's RTP ports FIRST-LAST"
    )
    parser.add_argument(
        "--sniffer", action="store_true", help="also count with the Python sniffer, to compare"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and SIPp traces")
    parser.add_argument(
        "--trace-sip", action="store_true", help="SIPp traces every SIP message (with --keep)"
    )


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    missing = environment_ok()
    if missing:
        parser.exit(2, f"{parser.prog}: {missing}\n")
    if shutil.which("nft") is None or os.geteuid() != 0:
        parser.exit(2, f"{parser.prog}: the RTP counters need root and nft (Debian nftables)\n")
    if args.hold <= 0 or args.repeat < 1 or args.setup_rate <= 0:
        parser.error("--hold, --repeat and --setup-rate must be positive")
    if args.relay_ports:
        needed = relay_port_count(max(args.concurrency))
        if args.relay_ports[1] - args.relay_ports[0] + 1 < needed:
            parser.error(f"--relay-ports: {needed} ports needed at {max(args.concurrency)} calls")


def run_levels(
    args: argparse.Namespace,
    title: str,
    run_one: Callable[[LevelPlan, Ports, Path, int], RunFigures],
) -> int:
    """Every level `--repeat` times, a table row as each run ends; 0 if all held cleanly."""
    work_root = Path(tempfile.mkdtemp(prefix="callrec-bench-"))
    print(
        f"# {title}: hold {args.hold:g} s at each level, setup rate {args.setup_rate:g} calls/s, "
        f"{args.repeat} run(s) per level; {os.cpu_count()} CPUs",
        flush=True,
    )
    print(TABLE_HEADER)
    print("|" + "---|" * (TABLE_HEADER.count("|") - 1), flush=True)
    results: list[RunFigures] = []
    aborted = 0
    try:
        for concurrency in args.concurrency:
            for run in range(1, args.repeat + 1):
                uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout
                print(f"# before {concurrency} run {run}: {uptime.strip()}", file=sys.stderr)
                plan = LevelPlan(concurrency, args.hold, args.setup_rate)
                ports = plan_ports(args, concurrency)
                run_root = work_root / f"c{concurrency}-r{run}"
                try:
                    figures = run_one(plan, ports, run_root, run)
                except (AssertionError, RuntimeError, OSError) as error:
                    # A server that does not start loses this run, not the levels after it.
                    print(f"# {concurrency} run {run} did not run: {error}", file=sys.stderr)
                    aborted += 1
                    continue
                results.append(figures)
                print_run(figures)
                if not args.keep:
                    # Recordings of a 500-call run take hundreds of MB: free them now.
                    shutil.rmtree(run_root, ignore_errors=True)
    finally:
        if args.keep:
            print(f"\nlogs and traces: {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    clean = not aborted and all(
        r.failed == 0
        and r.forward_percent >= 99.9
        and r.back_percent >= 99.9
        and r.held
        and min(r.held) >= r.concurrency
        for r in results
    )
    return 0 if clean else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.calls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_load_options(parser)
    parser.add_argument("--mode", choices=("plain", "recorded"), default="plain")
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="through Kamailio to N nodes sharing PostgreSQL and S3 (testkit/cluster.py)",
    )
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.cluster:
        missing = cluster_missing()
        if missing is not None:
            parser.exit(2, f"{parser.prog}: --cluster: {missing}\n")
        if not 1 <= args.cluster <= 8:
            parser.error("--cluster: 1 to 8 nodes")

        def run_nodes(plan: LevelPlan, ports: Ports, root: Path, run: int) -> RunFigures:
            return run_cluster(
                plan, ports, root, args.mode, run, args.cluster, args.sniffer, args.trace_sip
            )

        title = f"callrec call path through Kamailio to {args.cluster} nodes, mode {args.mode}"
        return run_levels(args, title, run_nodes)

    def run_one(plan: LevelPlan, ports: Ports, root: Path, run: int) -> RunFigures:
        return run_callrec(plan, ports, root, args.mode, run, args.sniffer, args.trace_sip)

    return run_levels(args, f"callrec call path, mode {args.mode}", run_one)


if __name__ == "__main__":
    sys.exit(main())
