"""RTP hijack against a real `callrec serve`: a host on 127.0.0.2 sprays the RTP range.

The attacker sends one RTP packet to every even port of callrec's configured range ten
times a second for the whole call (bounded in time and count). Before strict source
checks, the relay latched onto the first packet from anywhere: the attacker got most of
the callee's audio and its own audio went to the phone and into the recording. Now it
must receive nothing, and both directions of the SIPp call must arrive whole and free of
its packets. The second test does the same with NAT'ed phones whose SDP names private
addresses (10.0.0.5, 192.168.1.20) while they send from loopback; nothing is ever sent
to those addresses (callrec rewrites the SDP each side sees, and guesses loopback).
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import TRUNK_NUMBER, CallrecServer, free_port, make_server
from testkit.rtp_counter import RtpCounter, count_pcap_rtp_packets
from testkit.sipp_runner import (
    SippProcess,
    SippResult,
    scenario_path,
    sipp_command,
    wait_until_bound,
)
from testkit.waiting import wait_until

pytestmark = pytest.mark.e2e

PCAP = "/usr/share/sip-tester/g711a.pcap"
ATTACKER_HOST = "127.0.0.2"
ATTACKER_SSRC = 0x0BAD0BAD
SPRAY_INTERVAL = 0.1  # ten rounds a second
SPRAY_MAX_SECONDS = 40.0
RTP_PORTS = 100  # callrec's range: 50 even ports to spray
RINGING_MS = 1500
SUMMARY = re.compile(
    r"closed; (\d+) packet\(s\) from unexpected sources were dropped "
    r"\(leg a: (\d+), leg b: (\d+)\)"
)


class Sprayer:
    """One RTP packet to each port per round, ten rounds a second, from 127.0.0.2, in a
    thread; counts what comes back. Stops by itself after `max_seconds`."""

    def __init__(self, target: str, ports: range, *, max_seconds: float) -> None:
        self.target = target
        self.ports = ports
        self.max_seconds = max_seconds
        self.max_packets = int(max_seconds / SPRAY_INTERVAL + 1) * len(ports)
        self.sent = 0
        self.received = 0  # packets of the call's audio (not the attacker's own SSRC)
        self.echoed = 0  # its own packets coming back
        self.rounds = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((ATTACKER_HOST, 0))
        self._socket.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-sprayer", daemon=True)

    def __enter__(self) -> Sprayer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._socket.close()

    def _packet(self, sequence: int) -> bytes:
        header = struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, 160 * sequence, ATTACKER_SSRC)
        return header + b"\x55" * 160

    def _run(self) -> None:
        started = time.monotonic()
        deadline = started + self.max_seconds
        next_round = started
        while not self._stop.is_set() and time.monotonic() < deadline:
            packet = self._packet(self.rounds)
            for port in self.ports:
                if self.sent >= self.max_packets:
                    return
                try:
                    self._socket.sendto(packet, (self.target, port))
                    self.sent += 1
                except OSError:
                    pass  # a full buffer or an ICMP error: the next round sends again
            self.rounds += 1
            next_round += SPRAY_INTERVAL
            self._drain(until=next_round)
        self._drain(until=time.monotonic() + 0.2)

    def _drain(self, *, until: float) -> None:
        while (remaining := until - time.monotonic()) > 0 and not self._stop.is_set():
            readable, _, _ = select.select([self._socket], [], [], remaining)
            if not readable:
                continue
            try:
                data, _ = self._socket.recvfrom(65535)
            except OSError:
                continue  # e.g. ECONNREFUSED from an ICMP error; not a packet
            # The call's audio carries the phones' SSRCs. A packet of the attacker's own
            # SSRC coming back is not stolen audio (a relay that forwarded it would also
            # have injected it, which the phones' side checks); it can be the echo of an
            # unrelated RTP echo server that happens to hold a port of the sprayed range.
            if len(data) < 12 or struct.unpack_from("!I", data, 8)[0] != ATTACKER_SSRC:
                self.received += 1
            else:
                self.echoed += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"), sipp=True, rtp_ports=RTP_PORTS)
    srv.add_user("201", "Alice Martin", "pw-201")
    yield from srv.serving()


def start_sipp_with_sdp_host(
    scenario: str, work_dir: Path, sdp_host: str | None, **options: object
) -> SippProcess:
    """SIPp running `scenario`, its SDP naming `sdp_host` (its own address if None).

    SIPp binds its media socket to the address its SDP names, so a phone behind NAT is
    played by a copy of the scenario whose `c=` line names the private address while
    SIPp sends from loopback.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    command = sipp_command(scenario, work_dir=work_dir, timeout_s=60.0, **options)  # type: ignore[arg-type]
    if sdp_host is not None:
        original = scenario_path(scenario)
        copy = work_dir / original.name
        text = original.read_text(encoding="iso-8859-1")
        rewritten = text.replace("c=IN IP[media_ip_type] [media_ip]", f"c=IN IP4 {sdp_host}")
        assert rewritten != text, "the scenario has no c= line to rewrite"
        copy.write_text(rewritten, encoding="iso-8859-1")
        command[command.index(str(original))] = str(copy)
    return SippProcess(scenario, command, work_dir, 60.0)


def call_under_attack(
    server: CallrecServer, tmp_path: Path, *, phone_sdp: str | None, trunk_sdp: str | None
) -> None:
    """One SIPp call that rings 1.5 s then talks 8 s (the phone plays a pcap, the trunk
    echoes it) while the range is sprayed."""
    before = len(server.calls())
    summaries_before = len(SUMMARY.findall(server.log()))
    sent = count_pcap_rtp_packets(PCAP)
    uas_media = free_port(even=True, span=4)
    uac_media = free_port(even=True, span=4)
    counter = RtpCounter(
        range(min(uas_media, uac_media), max(uas_media, uac_media) + 1), keep_payloads=True
    )
    sprayed = range(server.rtp_first, server.rtp_last + 1, 2)
    with counter, Sprayer("127.0.0.1", sprayed, max_seconds=SPRAY_MAX_SECONDS) as attacker:
        # The trunk sends 183 with SDP and answers RINGING_MS later: the relay's ports
        # are open for that long before either phone sends, as with a ringing phone.
        trunk = start_sipp_with_sdp_host(
            "uas_early_media.xml",
            tmp_path / "uas",
            trunk_sdp,
            local_port=server.trunk_port,
            media_port=uas_media,
            rtp_echo=True,
            call_length_ms=RINGING_MS,
        )
        wait_until_bound(trunk, server.trunk_port)
        phone = start_sipp_with_sdp_host(
            "uac_auth_pcap.xml",
            tmp_path / "uac",
            phone_sdp,
            remote=server.sip_address,
            local_port=free_port(),
            media_port=uac_media,
            callee=TRUNK_NUMBER,
            caller="201",
            user="201",
            password="pw-201",
            pcap=PCAP,
            call_length_ms=8000,
            extra=["-auth_uri", f"{TRUNK_NUMBER}@{server.sip_address}"],
        )
        phone_result: SippResult = phone.wait()
        trunk_result = trunk.wait()
        # The relay's end-of-call summary: it has closed, so nothing more is forwarded
        # and what it sent is already queued for the counter.
        summaries = wait_for_summaries(server, before_count=summaries_before)
    counts = counter.stop()
    assert phone_result.ok, phone_result.summary()
    assert trunk_result.ok, trunk_result.summary()

    # The attack ran for the whole call, and reached nobody.
    assert attacker.rounds >= 80, attacker.rounds
    assert attacker.received == 0, f"the attacker received {attacker.received} packets"

    # Both directions whole: the phone's pcap reached the trunk through the relay, and
    # the trunk's echo reached the phone; no packet of the attacker among them.
    at_trunk, at_phone = counts.get(uas_media, 0), counts.get(uac_media, 0)
    assert 0.999 * sent <= at_trunk <= sent, (at_trunk, sent)
    assert 0.999 * sent <= at_phone <= sent, (at_phone, sent)
    for port in (uas_media, uac_media):
        ssrcs = {payload[8:12] for payload in counter.payloads.get(port, []) if len(payload) >= 12}
        assert struct.pack("!I", ATTACKER_SSRC) not in ssrcs

    # The relay saw the attack on both legs and dropped it (its summary at call end).
    rows = server.wait_for_calls(before + 1)
    assert rows and rows[0]["disposition"] == "answered", rows[:1]
    total, leg_a, leg_b = (int(value) for value in summaries[-1])
    assert leg_a >= 50 and leg_b >= 50, summaries[-1]
    assert total == leg_a + leg_b <= attacker.sent
    print(
        f"attacker sent {attacker.sent} packets in {attacker.rounds} rounds, received "
        f"{attacker.received}; relay dropped {total} (leg a {leg_a}, leg b {leg_b}); "
        f"pcap {sent} packets, at trunk {at_trunk}, at phone {at_phone}"
    )


def wait_for_summaries(
    server: CallrecServer, *, before_count: int, timeout: float = 10.0
) -> list[tuple[str, ...]]:
    """The relay's end-of-call foreign-packet summaries, once one more than
    `before_count` is in the log (the relay closes right after the BYE)."""

    def found() -> list[tuple[str, ...]] | None:
        summaries: list[tuple[str, ...]] = SUMMARY.findall(server.log())
        return summaries if len(summaries) > before_count else None

    return wait_until(found, timeout=timeout, what="a foreign-packet summary in the log")


def test_spraying_attacker_gets_nothing_and_the_call_audio_is_whole(
    server: CallrecServer, tmp_path: Path
) -> None:
    call_under_attack(server, tmp_path, phone_sdp=None, trunk_sdp=None)


def test_nated_phones_with_private_sdp_addresses_talk_through_the_attack(
    server: CallrecServer, tmp_path: Path
) -> None:
    call_under_attack(server, tmp_path, phone_sdp="192.168.1.20", trunk_sdp="10.0.0.5")
