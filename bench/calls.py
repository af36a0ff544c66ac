"""Call-path load bench: SIPp calls with audio through a real `callrec serve`.

For each concurrency level the bench starts a fresh `callrec serve` (so that CPU, RSS
and log errors belong to that level alone), a SIPp trunk (uas_echo.xml with
``-rtp_echo``) and a SIPp phone (uac_auth_pcap.xml: 407 challenge, g711a.pcap, BYE after
``--call-seconds``) that places ``--calls`` calls, at most ``concurrency`` at once.

RTP is counted on the wire (tests/e2e/rtp_counter.py, root only). SIPp plays every
call's pcap from the one ``-mp`` port of the phone, and its ``-rtp_echo`` trunk listens
on one port for all calls, so per level:

* sent      = packets whose *source* is the phone's media port (towards callrec);
* far end   = packets whose *destination* is the trunk's media port (from callrec);
* echo back = packets whose destination is the phone's media port, against those the
  trunk echoed (source = the trunk's media port): the return direction of the relay.

The setup delay is measured by SIPp's response-time timers in a copy of
uac_auth_pcap.xml: "challenge" is INVITE to 407, "setup" is the authenticated INVITE to
its 200 (callrec forwards it to the trunk, which answers at once). Dialling to answer is
about the sum of the two. SIPp's clock moves in steps of a few ms (one per main-loop
turn), so values under ~4 ms read as 0 or 4.

CPU is the callrec process's utime+stime (/proc/PID/stat) over the level, divided by
the call-minutes held (successful calls x --call-seconds); "peak CPU %" is its busiest
one-second window (100 % = one core: the asyncio loop is one thread); "machine peak
busy %" is the same for the whole box (all cores; SIPp and the sniffer run here too).
Peak RSS is its VmHWM. "calls/s offered" is SIPp's -r, chosen to reach the level with -l as the cap.

Run from the repository root, as root:
    python -m bench.calls [--calls 100] [--concurrency 10,20,50,100] [--call-seconds 8]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testkit.harness import CallrecServer, free_port, make_server
from testkit.rtp_counter import RtpCounter, count_pcap_rtp_packets
from testkit.sipp_runner import G711A_PCAP, environment_ok, scenario_path

PHONE_EXTENSION = "201"
PHONE_PASSWORD = "bench-201"
CALLEE = "300"
# Time SIPp needs per call besides the held time: challenge, setup, BYE.
CALL_OVERHEAD_S = 0.2
# After the trunk is done: let the last CDRs be written and queued packets be counted.
SETTLE_S = 1.0
# g711a.pcap lasts 7.05 s; a shorter call cuts it at the BYE.
PCAP_SECONDS = 7.1
TARGET_ARRIVED = 0.999
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback")


@dataclass
class LevelResult:
    """The figures of one concurrency level."""

    concurrency: int
    calls: int
    offered_rate: float
    successful: int
    failed: int
    peak_concurrent: int
    elapsed_s: float
    rtp_sent: int
    rtp_expected: int
    rtp_far_end: int
    rtp_echoed: int
    rtp_echo_back: int
    counter_drops: int
    cpu_s: float
    call_seconds: float
    call_minutes: float
    setup_ms: list[float]
    challenge_ms: list[float]
    peak_rss_kb: int
    peak_cpu_percent: float
    machine_peak_percent: float
    cdr_answered: int
    log_problems: list[str]
    sipp_failures: dict[str, str]
    sipp_first_error: str
    work_dir: Path
    recorded: RecordingFigures | None = None

    @property
    def far_end_ratio(self) -> float:
        return self.rtp_far_end / self.rtp_sent if self.rtp_sent else 0.0

    @property
    def echo_ratio(self) -> float:
        return self.rtp_echo_back / self.rtp_echoed if self.rtp_echoed else 0.0

    @property
    def cpu_per_call_minute(self) -> float:
        return self.cpu_s / self.call_minutes if self.call_minutes else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces: fields are counted after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_jiffies() -> tuple[int, int]:
    """(all, idle) CPU time of the machine so far, from /proc/stat, in clock ticks."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + values[4]  # idle + iowait


def machine_busy_fraction(sample_s: float = 1.0) -> float:
    """Share of all CPUs not idle over `sample_s` (other jobs would make figures noisy)."""

    total_before, idle_before = cpu_jiffies()
    time.sleep(sample_s)
    total_after, idle_after = cpu_jiffies()
    elapsed = total_after - total_before
    return 1.0 - (idle_after - idle_before) / elapsed if elapsed else 0.0


def timed_scenario(directory: Path) -> Path:
    """uac_auth_pcap.xml with two named response timers: INVITE→407 and auth INVITE→200."""
    text = scenario_path("uac_auth_pcap.xml").read_text()
    first_invite = text.index('<send retrans="500">')
    text = (
        text[:first_invite]
        + '<send retrans="500" start_rtd="challenge">'
        + text[first_invite + len('<send retrans="500">') :]
    )
    authenticated = text.index("CSeq: 2 INVITE")
    second_invite = text.rindex('<send retrans="500">', 0, authenticated)
    text = (
        text[:second_invite]
        + '<send retrans="500" start_rtd="setup">'
        + text[second_invite + len('<send retrans="500">') :]
    )
    for code in ("407", "401"):
        old = f'<recv response="{code}" optional="true" auth="true"'
        if old not in text:
            raise RuntimeError(f"uac_auth_pcap.xml changed: no {old!r}")
        text = text.replace(old, old + ' rtd="challenge"')
    # Both 200s (with and without a challenge) close the setup timer.
    text = text.replace('rtd="true"', 'rtd="setup"')
    path = directory / "bench_uac_auth_pcap.xml"
    path.write_text(text)
    return path


def response_times(work_dir: Path, stem: str) -> dict[str, list[float]]:
    """SIPp -trace_rtt rows by timer name: {name: [ms, ...]}."""
    times: dict[str, list[float]] = {}
    for path in sorted(work_dir.glob(f"{stem}_*_rtt.csv")):
        for row in csv.reader(io.StringIO(path.read_text(errors="replace")), delimiter=";"):
            # Columns: Date_ms;response_time_ms;rtd_no
            if len(row) < 3:
                continue
            try:
                value = float(row[1])
            except ValueError:
                continue
            times.setdefault(row[2].strip(), []).append(value)
    return times


def peak_current_calls(work_dir: Path, stem: str) -> int:
    """Highest CurrentCall over the rows of SIPp's statistics CSV (one row a second)."""
    path = work_dir / f"{stem}.csv"
    if not path.is_file():
        return 0
    rows = list(csv.DictReader(io.StringIO(path.read_text(errors="replace")), delimiter=";"))
    peak = 0
    for row in rows:
        try:
            peak = max(peak, int(row.get("CurrentCall") or 0))
        except ValueError:
            continue
    return peak


def make_bench_server(root: Path, concurrency: int, mode: str = "plain") -> CallrecServer:
    """A callrec config with enough relay ports for `concurrency` calls (2 pairs each).

    In `recorded` mode every call is recorded (mono WAV) without an announcement: a
    prompt replaces relayed packets for its length, which would blur the RTP counts.
    """
    server = make_server(
        root,
        '[recording]\nannouncement = "none"\n' if mode == "recorded" else "",
        sipp=True,
        rtp_ports=max(400, 4 * concurrency + 200),
    )
    # Plain relay: the phone's user is never recorded; recorded: always.
    recording_mode = "always" if mode == "recorded" else "never"
    server.add_user(PHONE_EXTENSION, "Bench Phone", PHONE_PASSWORD, "--mode", recording_mode)
    return server


@dataclass
class RecordingFigures:
    """What the recorded calls left behind: files complete, samples written."""

    complete: int = 0
    other: int = 0
    written_s: float = 0.0
    media_s: float = 0.0

    @property
    def written_ratio(self) -> float:
        return self.written_s / self.media_s if self.media_s else 0.0


def recording_figures(server: CallrecServer, calls: int, timeout: float = 30.0) -> RecordingFigures:
    """File length against each answered call's media time (answer to hang-up)."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = json.loads(
            server.cli("recordings", "list", "--json", "--limit", str(calls + 10)).stdout
        )
        if all(r["status"] != "recording" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    calls_by_id = {
        row["id"]: row
        for row in json.loads(
            server.cli("calls", "list", "--json", "--limit", str(calls + 10)).stdout
        )
    }
    figures = RecordingFigures()
    for row in rows:
        if row["status"] != "complete":
            figures.other += 1
            continue
        figures.complete += 1
        figures.written_s += float(row["duration_s"] or 0.0)
        call = calls_by_id.get(row["call_id"], {})
        figures.media_s += float(call.get("duration_s") or 0.0)
    return figures


class CpuSampler:
    """Peak CPU use of a process, and of the machine, over one-second windows (a thread)."""

    def __init__(self, pid: int, max_seconds: float, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.max_seconds = max_seconds
        self.interval_s = interval_s
        self.peak_percent = 0.0
        self.machine_peak_percent = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        return self.peak_percent

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        last_cpu, last_at = cpu_seconds(self.pid), time.monotonic()
        last_total, last_idle = cpu_jiffies()
        while not self._stop.wait(self.interval_s) and time.monotonic() < deadline:
            try:
                cpu, at = cpu_seconds(self.pid), time.monotonic()
            except OSError:
                return
            total, idle = cpu_jiffies()
            self.peak_percent = max(self.peak_percent, 100 * (cpu - last_cpu) / (at - last_at))
            if total > last_total:
                busy = 1 - (idle - last_idle) / (total - last_total)
                self.machine_peak_percent = max(self.machine_peak_percent, 100 * busy)
            last_cpu, last_at, last_total, last_idle = cpu, at, total, idle


def answered_cdrs(server: CallrecServer, expected: int, calls: int, timeout: float = 15.0) -> int:
    """Ended, answered CDRs once `expected` are there (written after the BYE) or at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        listing = server.cli("calls", "list", "--json", "--limit", str(calls + 10)).stdout
        rows: list[dict[str, Any]] = json.loads(listing)
        answered = sum(
            1 for row in rows if row.get("disposition") == "answered" and row.get("ended_at")
        )
        if answered >= expected or time.monotonic() > deadline:
            return answered
        time.sleep(0.3)


def run_level(
    concurrency: int,
    calls: int,
    call_seconds: float,
    rate: float | None,
    root: Path,
    mode: str = "plain",
) -> LevelResult:
    """One bounded SIPp run through a fresh callrec; everything is stopped on return."""
    offered_rate = rate if rate else concurrency / (call_seconds + CALL_OVERHEAD_S)
    expected_s = calls / offered_rate + call_seconds
    timeout_s = 2 * expected_s + 30
    root.mkdir(parents=True, exist_ok=True)
    scenario = timed_scenario(root)
    server = make_bench_server(root / "callrec", concurrency, mode)
    # One block: the trunk's -rtp_echo binds its port and port+2, the phone takes +4.
    media_block = free_port(even=True, span=8)
    trunk_media, phone_media = media_block, media_block + 4
    counter = RtpCounter(range(media_block, media_block + 8), max_seconds=timeout_s + 60)
    try:
        server.start()
        assert server.process is not None
        pid = server.process.pid
        trunk = server.start_sipp_trunk(
            root / "trunk", media_port=trunk_media, calls=calls, timeout_s=timeout_s
        )
        with trunk:
            counter.start()
            sampler = CpuSampler(pid, max_seconds=timeout_s + 30).start()
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            phone = server.run_sipp_phone(
                root / "phone",
                str(scenario),
                caller=PHONE_EXTENSION,
                password=PHONE_PASSWORD,
                callee=CALLEE,
                local_port=free_port(),
                media_port=phone_media,
                pcap=G711A_PCAP,
                call_length_ms=round(call_seconds * 1000),
                calls=calls,
                rate=offered_rate,
                max_concurrent=concurrency,
                timeout_s=timeout_s,
            )
            elapsed_s = time.monotonic() - started
            trunk.wait(timeout_s=SETTLE_S + 5)
            time.sleep(SETTLE_S)
            cpu_after = cpu_seconds(pid)
            peak_cpu = sampler.stop()
            counter.stop()
        rss_kb = peak_rss_kb(pid)
        cdr_answered = answered_cdrs(server, phone.successful_calls, calls)
        recorded = recording_figures(server, calls) if mode == "recorded" else None
    finally:
        counter.stop()
        server.stop()
    timers = response_times(phone.work_dir, Path(scenario).stem)
    log_problems = [line for line in server.log().splitlines() if LOG_PROBLEM.search(line)]
    pcap_packets = count_pcap_rtp_packets(str(G711A_PCAP))
    return LevelResult(
        concurrency=concurrency,
        calls=calls,
        offered_rate=offered_rate,
        successful=phone.successful_calls,
        failed=phone.failed_calls + max(0, calls - phone.created_calls),
        peak_concurrent=peak_current_calls(phone.work_dir, Path(scenario).stem),
        elapsed_s=elapsed_s,
        rtp_sent=counter.source_counts.get(phone_media, 0),
        rtp_expected=pcap_packets * phone.successful_calls,
        rtp_far_end=counter.destination_counts.get(trunk_media, 0),
        rtp_echoed=counter.source_counts.get(trunk_media, 0),
        rtp_echo_back=counter.destination_counts.get(phone_media, 0),
        counter_drops=counter.kernel_drops,
        cpu_s=cpu_after - cpu_before,
        call_seconds=call_seconds,
        call_minutes=phone.successful_calls * call_seconds / 60,
        setup_ms=timers.get("setup", []),
        challenge_ms=timers.get("challenge", []),
        peak_rss_kb=rss_kb,
        peak_cpu_percent=peak_cpu,
        machine_peak_percent=sampler.machine_peak_percent,
        cdr_answered=cdr_answered,
        log_problems=log_problems,
        sipp_failures={
            name: value
            for name, value in phone.statistics.items()
            if name.startswith("Failed") and name.endswith("(C)") and value not in ("", "0")
        },
        sipp_first_error=first_sipp_error(phone.errors),
        work_dir=root,
        recorded=recorded,
    )


def first_sipp_error(errors: str) -> str:
    """The first event line of SIPp's error trace (why the first failed call failed)."""
    for line in errors.splitlines():
        if "Aborting call" in line or "failed" in line.lower() or "timed out" in line:
            return line.strip()[:300]
    return ""


def percentile(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "-"


TABLE_HEADER = (
    "| concurrent (peak) | calls | calls/s offered | failed | RTP sent | RTP at far end "
    "| % arrived | echo back % | CPU s per call-min | setup p50/p99 ms | 407 p50/p99 ms "
    "| callrec peak CPU % | machine peak busy % | peak RSS MB |"
)


def table_row(result: LevelResult) -> str:
    return (
        f"| {result.concurrency} ({result.peak_concurrent}) | {result.calls} "
        f"| {result.offered_rate:.2f} | {result.failed} | {result.rtp_sent} "
        f"| {result.rtp_far_end} | {100 * result.far_end_ratio:.3f} "
        f"| {100 * result.echo_ratio:.3f} | {result.cpu_per_call_minute:.3f} "
        f"| {percentile(result.setup_ms, 50)}/{percentile(result.setup_ms, 99)} "
        f"| {percentile(result.challenge_ms, 50)}/{percentile(result.challenge_ms, 99)} "
        f"| {result.peak_cpu_percent:.0f} | {result.machine_peak_percent:.0f} "
        f"| {result.peak_rss_kb / 1024:.0f} |"
        + (
            f" {result.recorded.complete} | {100 * result.recorded.written_ratio:.3f} |"
            if result.recorded is not None
            else ""
        )
    )


def format_table(results: Sequence[LevelResult]) -> str:
    header = TABLE_HEADER
    if any(r.recorded is not None for r in results):
        header += " recordings complete | % samples written |"
    columns = header.count("|") - 1
    separator = "|" + "---|" * columns
    return "\n".join([header, separator, *(table_row(r) for r in results)])


def level_notes(result: LevelResult) -> list[str]:
    """What a reader must know beside the row: checks that did not hold, log problems."""
    notes: list[str] = []
    prefix = f"concurrency {result.concurrency}:"
    if result.failed:
        notes.append(f"{prefix} {result.failed} failed calls, SIPp counters {result.sipp_failures}")
        if result.sipp_first_error:
            notes.append(f"    first: {result.sipp_first_error}")
    if result.far_end_ratio < TARGET_ARRIVED:
        arrived = 100 * result.far_end_ratio
        notes.append(f"{prefix} only {arrived:.3f}% of the RTP sent reached the far end")
    if result.call_seconds >= PCAP_SECONDS and result.rtp_sent != result.rtp_expected:
        notes.append(
            f"{prefix} SIPp put {result.rtp_sent} RTP packets on the wire, "
            f"{result.rtp_expected} expected (pcap x successful calls)"
        )
    if result.counter_drops:
        notes.append(f"{prefix} the sniffer lost {result.counter_drops} frames: counts are low")
    if result.cdr_answered < result.successful:
        notes.append(f"{prefix} {result.cdr_answered} answered CDRs for {result.successful} calls")
    recorded = result.recorded
    if recorded is not None and (recorded.other or recorded.complete < result.successful):
        notes.append(
            f"{prefix} {recorded.complete} complete recordings for {result.successful} calls"
            f" ({recorded.other} in another state)"
        )
    if result.log_problems:
        notes.append(f"{prefix} {len(result.log_problems)} WARNING/ERROR lines in serve.log:")
        notes.extend(f"    {line}" for line in result.log_problems[:5])
    return notes


def parse_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"--concurrency {text!r}: positive integers, e.g. 10,20")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="calls per level (SIPp -m)")
    parser.add_argument(
        "--concurrency",
        type=parse_levels,
        default=[10, 20, 50, 100],
        help="comma-separated levels of simultaneous calls (SIPp -l)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="calls/s (SIPp -r); default concurrency / call length, to reach the level",
    )
    parser.add_argument(
        "--call-seconds", type=float, default=8.0, help="held time of each call (pcap: 7 s)"
    )
    parser.add_argument("--mode", choices=("plain", "recorded"), default="plain")
    parser.add_argument("--keep", action="store_true", help="keep the logs and SIPp traces")
    args = parser.parse_args(argv)

    missing = environment_ok()
    if missing:
        print(f"bench.calls: {missing}", file=sys.stderr)
        return 2
    if args.calls < 1 or args.call_seconds <= 0:
        parser.error("--calls and --call-seconds must be positive")

    busy = machine_busy_fraction()
    work_root = Path(tempfile.mkdtemp(prefix="callrec-bench-"))
    print(
        f"# callrec call path, mode {args.mode}: {args.calls} calls per level, "
        f"{args.call_seconds:g} s each, g711a.pcap; machine {100 * busy:.0f}% busy before start",
        flush=True,
    )
    if busy > 0.25:
        print("# WARNING: something else is using the CPU; figures may be noisy", flush=True)
    results: list[LevelResult] = []
    try:
        for concurrency in args.concurrency:
            busy_before = machine_busy_fraction(0.5)
            started = time.monotonic()
            result = run_level(
                concurrency,
                args.calls,
                args.call_seconds,
                args.rate,
                work_root / f"c{concurrency}",
                args.mode,
            )
            results.append(result)
            print(
                f"# level {concurrency}: {result.successful}/{result.calls} ok "
                f"in {time.monotonic() - started:.0f} s "
                f"(machine {100 * busy_before:.0f}% busy just before)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if results:
            print()
            print(format_table(results))
            notes = [note for result in results for note in level_notes(result)]
            print()
            print("\n".join(notes) if notes else "No check failed; serve.log has no warning.")
        if args.keep:
            print(f"\nlogs and traces: {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    ok = all(r.failed == 0 and r.far_end_ratio >= TARGET_ARRIVED for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
