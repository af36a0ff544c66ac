"""CPU cost of a media worker per call-minute: real relay sockets, real recorders.

Runs one `callrec.workers.worker.MediaWorker` in this process, the way a worker process
runs it (`callrec.workers.process`: the `[server] loop` "auto" event loop, the garbage
collector frozen and tuned), and drives it with the commands the SIP process sends:
`open`, `remote` for both legs, `started`, `record` (mono WAV, mode `always`, no
announcement, unless told otherwise), then `close`. A phone process (a child, so its
CPU is not counted) sends G.711 A-law RTP in 20 ms packets on both legs of every call
at once, from sockets on 127.0.0.1 (the calls' packets spread evenly over the 20 ms),
and reads what the relay forwards to it.

Prints, per run, the CPU (user + system, every thread of this process: the relay, the
recorders' ticks, the fsync and closing threads) used while the phones sent ("hold")
and from the first `open` to the last file sealed ("whole"), over the call-minutes the
phones sent: process CPU time, which other load on a shared machine disturbs much less
than wall time. Also the packets relayed against the packets sent, and the recordings'
length against the call time, answer to close (samples written).

    python -m bench.worker_cost [--calls 100] [--seconds 20] [--mode recorded] [--repeat 1]
        [--base-port PORT]

`--mode plain` relays without recording (the early tap still runs for 2 s per call, as
for any call); `--mode on-demand` records with the feature-code watcher on leg a
(in-band DTMF detection on the decoded audio, RFC 4733 on the packets); `--srtp` makes
both legs SRTP (AES_CM_128_HMAC_SHA1_80). Bounded: at most `--calls` calls, the phones
stop after `--seconds`, and a run gives up `--seconds` + 60 s after it started.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from callrec.config import event_loop_factory
from callrec.policy import RecordingMode
from callrec.recording.control import RecordingSpec
from callrec.workers.process import _quiet_garbage_collector
from callrec.workers.protocol import pack_bytes, pack_srtp_key
from callrec.workers.worker import MediaWorker
from media import g711
from testkit.sipp_runner import free_port

HOST = "127.0.0.1"
PACKET_S = 0.02
SUITE = "AES_CM_128_HMAC_SHA1_80"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} {profile} 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)

# The phones: a child process that sends every call's RTP on both legs and counts what
# comes back. argv: the JSON job; stdin: "go"; stdout: one JSON line of counts at the end.
PHONES = r"""
import json, os, select, socket, struct, sys, time
job = json.loads(sys.argv[1])
socks = [socket.socket(fileno=fd) for fd in job["fds"]]  # call i: 2i leg a, 2i+1 leg b
for sock in socks:
    sock.setblocking(False)
targets = [(job["host"], port) for port in job["ports"]]
srtp = None
if job["keys"]:
    import pylibsrtp
    srtp = []
    for i, key in enumerate(job["keys"]):
        policy = pylibsrtp.Policy(
            key=bytes.fromhex(key),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        srtp.append(pylibsrtp.Session(policy))
audio = bytes.fromhex(job["audio"])
frames = len(audio) // 160
streams = len(socks)
seconds = job["seconds"]
sys.stdin.readline()
start = time.monotonic()
sent = [0] * streams
received = 0
poller = select.epoll()
for index, sock in enumerate(socks):
    poller.register(sock.fileno(), select.EPOLLIN)
by_fd = {sock.fileno(): sock for sock in socks}


def read_all(timeout):  # what the relay forwarded to the phones: how many packets
    count = 0
    for fd, _ in poller.poll(timeout):
        while True:
            try:
                by_fd[fd].recv(2048)
            except BlockingIOError:
                break
            count += 1
    return count


calls = streams // 2
slot = 0.02 / calls  # call i sends both legs' packet k at (k * calls + i) * slot
slots = int(seconds / 0.02) * calls
done = 0
while done < slots:
    due = min(slots, int((time.monotonic() - start) / slot) + 1)
    while done < due:
        k, call = divmod(done, calls)
        for index in (2 * call, 2 * call + 1):
            frame = (k + index) % frames
            packet = struct.pack("!BBHII", 0x80, 8, k & 0xFFFF, (160 * k) & 0xFFFFFFFF,
                                 0x1000 + index) + audio[160 * frame:160 * frame + 160]
            if srtp is not None:
                packet = srtp[index].protect(packet)
            try:
                socks[index].sendto(packet, targets[index])
            except BlockingIOError:
                pass
            sent[index] += 1
        done += 1
    received += read_all(0.001)
time.sleep(0.3)
received += read_all(0)
print(json.dumps({"sent": sum(sent), "received": received}), flush=True)
"""


def _port_span(calls: int) -> int:
    """The relay's ports: 4 per call and spare pairs (a port another process holds is
    skipped, not fatal)."""
    return 4 * calls + 64


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _system_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _speech_alaw(seconds: float) -> bytes:
    rng = np.random.default_rng(11)
    t = np.arange(round(seconds * 8000)) / 8000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 720, 1500), 1))
    signal = np.clip(6000 * envelope * voiced + rng.normal(0, 300, t.size), -32768, 32767)
    return bytes(g711.alaw_encode(signal.astype(np.int16)).tobytes())


def _spec(folder: Path, index: int, mode: str, start: float) -> RecordingSpec:
    name = f"call{index:04d}"
    return RecordingSpec(
        relative=f"recordings/{name}.wav",
        absolute=str(folder / "recordings" / f"{name}.wav"),
        format="wav",
        channels="mono",
        internal_leg="a",
        start_time=start,
        mode=RecordingMode.ON_DEMAND if mode == "on-demand" else RecordingMode.ALWAYS,
        feature_code="*1",
        feature_code_timeout=2.0,
        paused="silence",
        swallow_feature_code=False,
        announcement="none",
        language="en",
        label=name,
    )


async def run(calls: int, seconds: float, mode: str, srtp: bool, first_port: int) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    worker = MediaWorker(HOST, first_port, first_port + _port_span(calls) - 1, events.append)
    folder = Path(tempfile.mkdtemp(prefix="worker_cost-"))
    phones = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2 * calls)]
    for sock in phones:
        sock.bind((HOST, 0))
    profile = "RTP/SAVP" if srtp else "RTP/AVP"
    phone_keys: list[str] = []
    cpu_start = _cpu()
    for sid in range(calls):
        await worker.handle({"op": "open", "id": sid, "sid": sid, "silence_timeout": None})
        if not events[-1].get("ok"):
            raise RuntimeError(f"open failed: {events[-1]}")
    relay_ports = [
        worker.calls[sid].session.local_port(leg) for sid in range(calls) for leg in "ab"
    ]
    answered = time.time()
    for sid in range(calls):
        sdp: dict[str, str] = {}
        for offset, leg in enumerate("ab"):
            port = phones[2 * sid + offset].getsockname()[1]
            await worker.handle(
                {"op": "remote", "sid": sid, "leg": leg, "host": HOST, "port": port}
            )
            if srtp:
                receive, send = secrets.token_bytes(30), secrets.token_bytes(30)
                phone_keys.append(receive.hex())
                await worker.handle(
                    {
                        "op": "srtp",
                        "sid": sid,
                        "leg": leg,
                        "receive": pack_srtp_key(SUITE, receive),
                        "send": pack_srtp_key(SUITE, send),
                    }
                )
            sdp[leg] = pack_bytes(SDP.format(port=port, profile=profile).encode())
        await worker.handle({"op": "started", "sid": sid})
        if mode != "plain":
            spec = _spec(folder, sid, mode, answered)
            await worker.handle(
                {"op": "record", "sid": sid, "spec": dataclasses.asdict(spec), "sdp": sdp}
            )
    ticker = asyncio.get_running_loop().create_task(worker.tick_forever())
    job = {
        "host": HOST,
        "fds": [sock.fileno() for sock in phones],
        "ports": relay_ports,
        "keys": phone_keys,
        "seconds": seconds,
        "audio": _speech_alaw(2.0).hex(),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PHONES,
        json.dumps(job),
        pass_fds=job["fds"],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    hold_start, system_start = _cpu(), _system_cpu()
    child.stdin.write(b"go\n")
    try:
        out, _ = await asyncio.wait_for(child.communicate(), timeout=seconds + 60)
    except TimeoutError:
        child.kill()
        raise
    hold_cpu, hold_system = _cpu() - hold_start, _system_cpu() - system_start
    counts = json.loads(out)
    at = time.time()
    relayed = sum(
        worker.calls[sid].session.stats(leg).rtp_out for sid in range(calls) for leg in "ab"
    )
    for sid in range(calls):
        await worker.handle({"op": "close", "sid": sid, "at": at})
    await worker.close_all()
    ticker.cancel()
    whole_cpu = _cpu() - cpu_start
    for sock in phones:
        sock.close()
    outcomes = [e for e in events if e.get("ev") == "recorded"]
    written = 0.0
    for path in sorted((folder / "recordings").glob("*.wav")):
        written += soundfile.info(str(path)).duration
        path.chmod(0o600)
        path.unlink()
    call_minutes = calls * seconds / 60
    return {
        "mode": mode,
        "srtp": srtp,
        "calls": calls,
        "seconds": seconds,
        "sent": counts["sent"],
        "relayed_pct": round(100 * relayed / max(1, counts["sent"]), 3),
        "received_pct": round(100 * counts["received"] / max(1, counts["sent"]), 3),
        "recordings": len(outcomes),
        # Against call time, the answer to the close (the phones start a little later).
        # (An on-demand call never toggled writes no whole file: not counted.)
        "written_pct": round(100 * written / (calls * (at - answered)), 2)
        if mode == "recorded"
        else None,
        "cpu_hold_s": round(hold_cpu, 2),
        "cpu_hold_system_s": round(hold_system, 2),
        "cpu_whole_s": round(whole_cpu, 2),
        "cpu_s_per_call_min_hold": round(hold_cpu / call_minutes, 4),
        "cpu_s_per_call_min_whole": round(whole_cpu / call_minutes, 4),
        "cpu_us_per_packet_hold": round(1e6 * hold_cpu / max(1, counts["sent"]), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mode", choices=("recorded", "on-demand", "plain"), default="recorded")
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--loop", default="auto", help="as [server] loop: auto, uvloop, asyncio")
    parser.add_argument(
        "--base-port", type=int, help="the relay's first port (default: a free range)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 1000 or not 0 < args.seconds <= 600:
        parser.error("--calls must be 1-1000 and --seconds 0-600")
    _quiet_garbage_collector()
    for _ in range(args.repeat):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        first_port = args.base_port or free_port(even=True, span=_port_span(args.calls))
        with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
            result = runner.run(run(args.calls, args.seconds, args.mode, args.srtp, first_port))
        print(json.dumps({"load_before": load, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
