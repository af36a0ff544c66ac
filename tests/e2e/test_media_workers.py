"""End-to-end: media in worker processes of a real `callrec serve` (`[media] workers = 2`).

- A worker killed with kill -9 mid-call, with one call on each worker: the other call
  keeps its audio both ways to its end; the killed worker's call is ended with a BYE
  carrying a Reason (RFC 3326) to both sides, its recording is repaired and filed as
  `partial` and plays; the worker is started again and the next call works.
- After a run of short calls, every RTP port is back: /metrics shows as many free port
  pairs as the pool holds.

The calls are SIPp phones (201, playing SIPp's g711a.pcap) to a SIPp trunk that echoes
RTP, so each side of a call hears the other; recordings are stereo (201 left, the trunk
right) to tell the two directions apart.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from testkit.harness import CallrecServer, make_server
from testkit.sipp_runner import environment_ok
from testkit.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(environment_ok() is not None, reason=str(environment_ok())),
]

PASSWORD = "pw-201"
AWAIT_BYE = str(Path(__file__).parent / "sipp" / "uac_pcap_await_bye.xml")
READY = re.compile(r"media worker (\d) ready \(pid (\d+)")
REASON = 'Reason: SIP ;cause=500 ;text="media worker lost"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("workers"),
        # The harness's [portal] table comes last but one: metrics goes on in it.
        'metrics = true\n[recording]\nchannels = "stereo"\nannouncement = "none"\n',
        sipp=True,
        rtp_ports=200,
        media_config="workers = 2\n",
    )
    srv.add_user("201", "Alice Martin", PASSWORD, "--mode", "always")
    yield from srv.serving()


def metrics(server: CallrecServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.portal_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def figure(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (metric, _), value in values.items() if metric == name)


def worker_pids(server: CallrecServer) -> dict[int, int]:
    """The latest PID of each worker, from the start-up lines of the log."""
    return {int(index): int(pid) for index, pid in READY.findall(server.log())}


def wall_time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def rms(samples: np.ndarray) -> float:  # type: ignore[type-arg]
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def answered_calls(server: CallrecServer, count: int) -> list[dict[str, object]]:
    return wait_until(
        lambda: (
            (rows := [r for r in server.calls() if r.get("answered_at")])
            and len(rows) >= count
            and rows
        ),
        timeout=15,
        what=f"{count} answered call(s)",
        interval=0.1,
    )


def test_a_killed_worker_ends_its_calls_only_and_is_replaced(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = worker_pids(server)
    assert sorted(before) == [0, 1], server.log()
    trunk = server.start_sipp_trunk(tmp_path / "uas", calls=2, trace_messages=True, timeout_s=60)
    with trunk:
        victim = server.start_sipp_phone(
            tmp_path / "victim", AWAIT_BYE, caller="201", password=PASSWORD,
            trace_messages=True, timeout_s=45, ready_wait_s=0,
        )  # fmt: skip
        with victim:
            [victim_call] = answered_calls(server, 1)
            survivor = server.start_sipp_phone(
                tmp_path / "survivor", caller="201", password=PASSWORD,
                call_length_ms=9000, timeout_s=45, ready_wait_s=0,
            )  # fmt: skip
            with survivor:
                rows = answered_calls(server, 2)
                [survivor_call] = [r for r in rows if r["id"] != victim_call["id"]]
                # Least loaded: the first call went to worker 0, the second to worker 1.
                values = metrics(server)
                for worker in ("0", "1"):
                    key = ("callrec_media_worker_calls", (("worker", worker),))
                    assert values[key] == 1, values
                victim_file = wait_until(
                    lambda: next(
                        (
                            server.data_dir / r["path"]
                            for r in server.recordings_of_call(int(victim_call["id"]))
                        ),
                        None,
                    ),
                    timeout=10,
                    what="the victim's recording row",
                )
                # A second of stereo audio on disk: the kill must leave something to keep.
                wait_until(
                    lambda: victim_file.is_file() and victim_file.stat().st_size > 32_000,
                    timeout=10,
                    what="audio in the victim's file",
                )
                killed_at = time.time()
                os.kill(before[0], signal.SIGKILL)
                victim_result = victim.wait(timeout_s=20)
                assert victim_result.ok, victim_result.summary()
                survivor_result = survivor.wait(timeout_s=30)
                assert survivor_result.ok, survivor_result.summary()
        trunk_result = trunk.wait(timeout_s=30)
        assert trunk_result.ok, trunk_result.summary()
    # The BYE to each side of the lost call says why.
    for work in (tmp_path / "victim", tmp_path / "uas"):
        messages = "\n".join(p.read_text(errors="replace") for p in work.glob("*.messages"))
        assert REASON in messages, messages[-3000:]
    survivor_messages = "\n".join(
        p.read_text(errors="replace") for p in (tmp_path / "uas").glob("*.messages")
    )
    assert survivor_messages.count(REASON) == 1  # not on the other call's BYE

    calls = {row["id"]: row for row in server.wait_for_calls(2)}
    assert calls[victim_call["id"]]["disposition"] == "interrupted", calls
    assert calls[survivor_call["id"]]["disposition"] == "answered", calls

    lost = server.wait_for_recording(int(victim_call["id"]))
    assert lost["status"] == "partial" and "media worker lost" in (lost["error"] or ""), lost
    audio, rate = sf.read(server.data_dir / lost["path"], dtype="int16", always_2d=True)
    assert rate == 8000 and len(audio) >= rate  # at least the second awaited above
    assert rms(audio[:, 0]) > 100, "the caller's audio before the kill is kept"

    kept = server.wait_for_recording(int(survivor_call["id"]))
    assert kept["status"] == "complete", kept
    audio, rate = sf.read(server.data_dir / kept["path"], dtype="int16", always_2d=True)
    # Both directions go on after the kill: the phone's audio (left) and the trunk's
    # echo of it (right), in the two seconds after it (the pcap plays 7 s from answer).
    after = int((killed_at - wall_time(str(survivor_call["answered_at"])) + 0.2) * rate)
    window = audio[after : after + 2 * rate]
    assert len(window) == 2 * rate, (after, len(audio))
    assert rms(window[:, 0]) > 100 and rms(window[:, 1]) > 100, (
        rms(window[:, 0]),
        rms(window[:, 1]),
    )

    # A new worker 0 took over, and a new call works.
    wait_until(
        lambda: worker_pids(server).get(0) not in (None, before[0]),
        timeout=15,
        what="worker 0 started again",
    )
    values = metrics(server)
    assert figure(values, "callrec_media_workers_alive") == 2
    assert figure(values, "callrec_media_worker_restarts_total") == 1
    trunk = server.start_sipp_trunk(tmp_path / "uas2", timeout_s=30)
    with trunk:
        phone = server.run_sipp_phone(
            tmp_path / "after", caller="201", password=PASSWORD, call_length_ms=1500, timeout_s=30
        )
        assert phone.ok, phone.summary()
        assert trunk.wait().ok
    newest = max(server.wait_for_calls(3), key=lambda row: int(row["id"]))
    assert server.wait_for_recording(int(newest["id"]))["status"] == "complete"


def test_every_port_is_back_in_the_pool_after_a_run_of_calls(
    server: CallrecServer, tmp_path: Path
) -> None:
    calls = 12
    size = figure(metrics(server), "callrec_media_port_pairs")
    assert size == 100  # rtp_ports = 200: a hundred pairs, fifty per worker
    trunk = server.start_sipp_trunk(tmp_path / "uas", calls=calls, timeout_s=60)
    with trunk:
        phones = server.run_sipp_phone(
            tmp_path / "uac", caller="201", password=PASSWORD, calls=calls, rate=6,
            max_concurrent=6, call_length_ms=1000, timeout_s=60,
        )  # fmt: skip
        assert phones.ok and phones.successful_calls == calls, phones.summary()
        assert trunk.wait().ok

    def drained() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        values = metrics(server)
        free = figure(values, "callrec_media_port_pairs_free")
        return values if free == size and figure(values, "callrec_calls_active") == 0 else None

    values = wait_until(drained, timeout=10, what="every port pair free again")
    assert figure(values, "callrec_media_port_pairs") == size
