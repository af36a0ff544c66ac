"""The attacks of issue 10 ("Trust") against a real `callrec serve` carrying real calls.

For each attack the bench starts a fresh `callrec serve`, a SIPp trunk (uas_echo.xml,
``-rtp_echo``) and a SIPp phone (extension 201) that holds ``--calls`` calls with G.711
audio (bench/calls.py's looping ``rtp_stream`` scenario). Once the trunk reports every
call up, the attack runs from 127.0.0.2 for at most ``--attack-seconds`` (each attack
also has a count bound), and meanwhile a probe places a call every 0.5 s (201 from
127.0.0.1, hung up on answer) to time setups under the attack. Then the held calls end
by themselves and everything is stopped by PID.

``--serve-cmd`` attacks another callrec, e.g. a worktree of the tree before issue 10
(``--serve-cmd /work/prefix/venv/bin/callrec``): the config holds only keys both trees
know, and the server starts with ``--server-nofile`` (1024, the usual soft limit) as its
open-file limit. The attackers and the measuring are this tree's code either way.

Per attack the table shows:

* sent: what the attacker sent (packets, requests, connections);
* attacker got: what it gained, measured from its own side or the victims' (RTP packets
  it received or injected, calls or bindings the server accepted, a password it found,
  legitimate requests it denied, how the trunk presented it);
* gained: that as one count; 0 is the goal, "?" means it could not be measured;
* RTP fwd/back %: the held calls' RTP through the relay over the whole run, from
  nftables counters on ``lo`` (bench/calls.py NftCounters): relay-to-trunk against
  phone-to-relay, and relay-to-phone against what the trunk echoed. Above 100 % means
  packets that were not the phone's (or the trunk's) reached the far end;
* held calls ok, held setup p99: the SIPp phone's successful calls and its timer from
  the authenticated INVITE to its 200 (these setups happen before the attack);
* calls during attack ok, their setup p99: the probe's calls, first INVITE to 200.

The attacks (each a function `attack_*(ctx) -> Outcome`):

* rtp_spray: one RTP packet to every port of the relay range, ten rounds a second, while
  victim calls ring and then talk: the trunk (a `trusted` host, 127.0.0.3) calls 202,
  which rings 1 s, answers and both send 150 packets; got = the victims' packets that
  reached the attacker plus the attacker's that reached a victim.
* register_replay: the victim (202, from 127.0.0.1) registers; the attacker replays its
  Authorization with its own Contact, same Call-ID and higher CSeq; got = replays
  answered 200 and whether its Contact became a binding of 202.
* invite_replay: the victim (201, from 127.0.0.1) places one call; the attacker replays
  its Proxy-Authorization in new INVITEs (new Call-ID, tag, branch); got = calls that
  reached the trunk (18x/2xx), which would be billed to 201.
* password_guessing: REGISTERs as 202 with wrong passwords, the right one as guess 15;
  got = whether it was found, and how many guesses were answered.
* tcp_exhaustion: TCP connections from 127.0.0.2, each sending the start of a request
  and holding it (slowloris); while held, a call (UDP), a TCP OPTIONS and a portal page
  from 127.0.0.1 are tried twice; got = those that failed, and connections held.
* invite_flood: unauthenticated INVITEs, new Call-ID each, at ``--flood-rate`` a second,
  never ACKed; got = calls (18x/2xx); also answers per INVITE, read until they stop.
* register_flood: 203, whose password the attacker has (an insider or a leaked
  device), registers a new Contact (new Call-ID) as fast as the challenges allow; got =
  bindings 203 holds beyond 10 (the default cap), the most any 200 listed.
* callerid_spoof: 203 calls the trunk claiming From 202 and P-Asserted-Identity
  +18005550100 (the trunk logs what it receives); got = spoofed identities the trunk saw.

Run as root (nftables) from the repository root; the default run takes about six
minutes::

    python -m bench.attack --calls 20 --attack-seconds 10
    python -m bench.attack --only none,rtp_spray --calls 10
    python -m bench.attack --serve-cmd /work/prefix/venv/bin/callrec --calls 20
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import re
import resource
import secrets
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b2bua.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)
from bench.calls import (
    CALLEE,
    PHONE_EXTENSION,
    PHONE_PASSWORD,
    LevelPlan,
    NftCounters,
    alaw_audio,
    bench_scenario,
    load_average,
    percentile,
    relay_port_count,
    response_times,
    sipp_current_calls,
)
from testkit.harness import (
    CALLREC,
    HOST,
    SIPP_DIGEST_CONFIG,
    CallrecServer,
    free_port,
    sip_options,
)
from testkit.sipp_runner import SippProcess, environment_ok, start_sipp
from testkit.waiting import wait_until

LOOPBACK = "127.0.0.1"
ATTACKER = "127.0.0.2"
TRUNK_HOST = "127.0.0.3"  # a [trunk] trusted host: rtp_spray's victim calls come from it
VICTIM = ("202", "bench-victim-202")
INSIDER = ("203", "bench-insider-203")
SPOOFED_NUMBER = "+18005550100"
# Extra calls the trunk accepts beyond the phone's (replayed and spoofed INVITEs).
TRUNK_SPARE_CALLS = 500
SDP_TEMPLATE = (
    "v=0\r\no=attacker 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
)


# ---------------------------------------------------------------- a small SIP client


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # SIP digest: MD5 by definition


_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def md5_challenge(response: SipResponse) -> dict[str, str] | None:
    """The parameters of the response's MD5 digest challenge (None if it has none)."""
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in response.headers.fields(name):
            params = {k.lower(): a or b for k, a, b in _PARAM.findall(value)}
            if params.get("algorithm", "MD5").upper() == "MD5":
                return params
    return None


def digest_credentials(
    challenge: dict[str, str], method: str, uri: str, user: str, password: str, nc: int = 1
) -> str:
    """An RFC 2617 MD5 Authorization value answering `challenge`."""
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in challenge.get("qop", "").split(","):
        cnonce = secrets.token_hex(8)
        count = f"{nc:08x}"
        response = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        value += f', response="{response}", qop=auth, nc={count}, cnonce="{cnonce}"'
    else:
        value += f', response="{_md5(f"{ha1}:{nonce}:{ha2}")}"'
    value += ", algorithm=MD5"
    if "opaque" in challenge:
        value += f', opaque="{challenge["opaque"]}"'
    return value


@dataclass
class Dialog:
    """What one request needs: ids that stay, CSeq that grows."""

    call_id: str = field(default_factory=lambda: secrets.token_hex(10))
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cseq: int = 1


class SipSocket:
    """A UDP SIP user agent at `host`: builds requests, reads the responses to them."""

    def __init__(self, host: str, server: tuple[str, int]) -> None:
        self.host = host
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    @property
    def server_uri(self) -> str:
        return f"sip:{self.server[0]}:{self.server[1]}"

    def request(
        self,
        method: str,
        uri: str,
        dialog: Dialog,
        *,
        user: str,
        to: str,
        to_tag: str | None = None,
        from_header: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: str = "",
        branch: str | None = None,
        cseq_method: str | None = None,
        contact_user: str | None = None,
    ) -> bytes:
        """One request's bytes (sent by `send`)."""
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {from_header or f'<sip:{user}@{self.server[0]}>'};tag={dialog.tag}",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} {cseq_method or method}",
            f"Contact: <sip:{contact_user or user}@{self.host}:{self.port}>",
        ]
        lines += [f"{name}: {value}" for name, value in extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def send(self, data: bytes) -> None:
        self.sent += 1
        self.sock.sendto(data, self.server)

    def final(self, call_id: str, timeout: float) -> tuple[SipResponse | None, int]:
        """The first final response for `call_id` (and how many provisionals came)."""
        provisional = 0
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                break
            try:
                message = parse_message(data)
            except SipParseError:
                continue
            if not isinstance(message, SipResponse) or message.headers.get("Call-ID") != call_id:
                continue
            if message.status >= 200:
                return message, provisional
            if message.status > 100:
                provisional += 1
        return None, provisional

    def exchange(self, data: bytes, call_id: str, timeout: float) -> tuple[SipResponse | None, int]:
        self.send(data)
        return self.final(call_id, timeout)


def to_tag(response: SipResponse) -> str | None:
    try:
        return NameAddr.parse(response.headers.get("To") or "").tag
    except SipParseError:
        return None


def ack_failure(ua: SipSocket, invite: bytes, response: SipResponse) -> None:
    """ACK a non-2xx final answer: the INVITE's branch and CSeq number (RFC 3261 17.1.1.3)."""
    head = invite.decode().split("\r\n")
    via = next(line for line in head if line.startswith("Via:"))
    request_line = head[0].replace("INVITE", "ACK", 1)
    keep = ("From:", "Call-ID:", "Max-Forwards:")
    lines = [request_line, via, *(line for line in head if line.startswith(keep))]
    lines.append(f"To: {response.headers.get('To')}")
    cseq = (response.headers.get("CSeq") or "1 INVITE").split()[0]
    lines += [f"CSeq: {cseq} ACK", "Content-Length: 0"]
    ua.send(("\r\n".join(lines) + "\r\n\r\n").encode())


def end_answered_call(
    ua: SipSocket, dialog: Dialog, response: SipResponse, *, user: str, to: str
) -> None:
    """ACK a 2xx and hang up at once (the bench's calls never outlive it)."""
    contact = response.headers.get("Contact") or ""
    try:
        target = NameAddr.parse(contact).uri if contact else ua.server_uri
    except SipParseError:
        target = ua.server_uri
    remote_tag = to_tag(response)
    ua.send(ua.request("ACK", target, dialog, user=user, to=to, to_tag=remote_tag))
    dialog.cseq += 1
    bye = ua.request("BYE", target, dialog, user=user, to=to, to_tag=remote_tag)
    ua.exchange(bye, dialog.call_id, 2.0)


def register(
    ua: SipSocket,
    user: str,
    password: str,
    *,
    dialog: Dialog | None = None,
    contact_user: str | None = None,
    timeout: float = 2.0,
) -> tuple[SipResponse | None, str | None]:
    """REGISTER `user` with digest; (final response, the Authorization sent)."""
    dialog = dialog or Dialog()
    aor = f"sip:{user}@{ua.server[0]}"
    extra = [("Expires", "300")]
    first = ua.request(
        "REGISTER", ua.server_uri, dialog, user=user, to=aor, extra=extra, contact_user=contact_user
    )
    response, _ = ua.exchange(first, dialog.call_id, timeout)
    if response is None or response.status != 401:
        return response, None
    challenge = md5_challenge(response)
    if challenge is None:
        return response, None
    dialog.cseq += 1
    credentials = digest_credentials(challenge, "REGISTER", ua.server_uri, user, password)
    second = ua.request(
        "REGISTER",
        ua.server_uri,
        dialog,
        user=user,
        to=aor,
        extra=[*extra, ("Authorization", credentials)],
        contact_user=contact_user,
    )
    final, _ = ua.exchange(second, dialog.call_id, timeout)
    return final, credentials


def place_call(
    ua: SipSocket,
    user: str,
    password: str,
    *,
    dialed: str = CALLEE,
    from_header: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    timeout: float = 5.0,
    answered_at: list[float] | None = None,
) -> tuple[SipResponse | None, bytes]:
    """An authenticated call from `user` that hangs up as soon as it is answered.

    Returns the final answer to the authenticated INVITE and that INVITE's bytes; the
    time.monotonic() of a 2xx is appended to `answered_at`.
    """
    dialog = Dialog()
    uri = f"sip:{dialed}@{ua.server[0]}:{ua.server[1]}"
    body = SDP_TEMPLATE.format(host=ua.host, port=free_port(even=True))
    invite = ua.request(
        "INVITE", uri, dialog, user=user, to=uri, from_header=from_header, extra=extra, body=body
    )
    response, _ = ua.exchange(invite, dialog.call_id, timeout)
    if response is None:
        return None, invite
    if response.status >= 300:
        ack_failure(ua, invite, response)
    challenge = md5_challenge(response) if response.status in (401, 407) else None
    if challenge is None:
        return response, invite
    header = "Authorization" if response.status == 401 else "Proxy-Authorization"
    dialog.cseq += 1
    credentials = digest_credentials(challenge, "INVITE", uri, user, password)
    invite = ua.request(
        "INVITE",
        uri,
        dialog,
        user=user,
        to=uri,
        from_header=from_header,
        extra=[*extra, (header, credentials)],
        body=body,
    )
    final, _ = ua.exchange(invite, dialog.call_id, timeout)
    if final is not None and final.status < 300:
        if answered_at is not None:
            answered_at.append(time.monotonic())
        end_answered_call(ua, dialog, final, user=user, to=uri)
    elif final is not None:
        ack_failure(ua, invite, final)
    return final, invite


def header_of(message: bytes, name: str) -> str | None:
    prefix = f"{name.lower()}:"
    for line in message.decode(errors="replace").split("\r\n"):
        if line.lower().startswith(prefix):
            return line.split(":", 1)[1].strip()
    return None


# ---------------------------------------------------------------- attacks


@dataclass
class AttackContext:
    """What an attack may use: the server, the relay range, its time bound."""

    server: CallrecServer
    relay: range
    seconds: float
    trunk_dir: Path
    flood_rate: float = 300.0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def sip(self) -> tuple[str, int]:
        return (LOOPBACK, self.server.sip_port)

    def deadline(self) -> float:
        return time.monotonic() + self.seconds


@dataclass
class Outcome:
    """What the attacker sent and got, in words with the numbers measured."""

    sent: str
    got: str
    # What the attacker gained, as one count (packets, calls, bindings, a password,
    # legitimate requests refused): 0 is the goal; None when it could not be measured.
    gained: int | None
    notes: list[str] = field(default_factory=list)


def attack_none(ctx: AttackContext) -> Outcome:
    """The baseline: the same calls, no attack."""
    ctx.stop.wait(ctx.seconds)
    return Outcome("-", "-", 0)


# ------------------------------------------------- rtp_spray: a ringing call's audio

ATTACKER_SSRC = 0xBAD
CALLER_SSRC = 0xCA11
CALLEE_SSRC = 0xCA11EE
RING_SECONDS = 1.0
VICTIM_PACKETS = 150  # 3 s of 20 ms packets each way
_SDP_CONNECTION = re.compile(rb"^c=IN IP4 (\S+)", re.MULTILINE)
_SDP_AUDIO = re.compile(rb"^m=audio (\d+)", re.MULTILINE)


def rtp_packet(sequence: int, ssrc: int, fill: bytes = b"\x55") -> bytes:
    """A 20 ms G.711 A-law RTP packet."""
    return struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, 160 * sequence, ssrc) + fill * 160


def rtp_ssrc(data: bytes) -> int | None:
    if len(data) < 12:
        return None
    ssrc: int = struct.unpack_from("!I", data, 8)[0]
    return ssrc


def sdp_media(body: bytes) -> tuple[str, int] | None:
    """Where an SDP body says audio goes (its first c= and m=audio)."""
    host, port = _SDP_CONNECTION.search(body), _SDP_AUDIO.search(body)
    if host is None or port is None:
        return None
    return host.group(1).decode(), int(port.group(1))


class RtpCounts:
    """An RTP socket that counts what reaches it, by SSRC."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.by_ssrc: dict[int, int] = {}

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            except OSError:
                continue
            ssrc = rtp_ssrc(data)
            if ssrc is not None:
                self.by_ssrc[ssrc] = self.by_ssrc.get(ssrc, 0) + 1

    def of(self, ssrc: int) -> int:
        return self.by_ssrc.get(ssrc, 0)

    def others(self, *ssrcs: int) -> int:
        return sum(n for ssrc, n in self.by_ssrc.items() if ssrc not in ssrcs)

    def close(self) -> None:
        self.sock.close()


def next_request(
    ua: SipSocket, method: str, timeout: float
) -> tuple[SipRequest, tuple[str, int]] | None:
    """The next `method` request reaching `ua` (other messages are dropped)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ua.sock.settimeout(remaining)
        try:
            data, source = ua.sock.recvfrom(65535)
        except (TimeoutError, BlockingIOError):
            return None
        with contextlib.suppress(SipParseError):
            message = parse_message(data)
            if isinstance(message, SipRequest) and message.method == method:
                return message, source
    return None


@dataclass
class VictimCall:
    """What one ringing-then-answered call carried (packets received, by SSRC)."""

    answered: bool = False
    callee_got_caller: int = 0
    caller_got_callee: int = 0
    injected: int = 0  # attacker packets that reached the caller or the callee
    failure: str = ""


def victim_call(ctx: AttackContext, callee: SipSocket) -> VictimCall:
    """The trunk (a trusted host) calls 202, which rings RING_SECONDS, answers and talks.

    The relay's ports for the call are open from the INVITE on, and while the phone
    rings nobody sends RTP: the window issue 10 item 1 was about. Caller and callee
    each send VICTIM_PACKETS packets and count what reaches them, by SSRC.
    """
    result = VictimCall()
    caller = SipSocket(TRUNK_HOST, ctx.sip)
    caller_rtp, callee_rtp = RtpCounts(TRUNK_HOST), RtpCounts(LOOPBACK)
    try:
        dialog = Dialog()
        uri = f"sip:{VICTIM[0]}@{LOOPBACK}:{ctx.sip[1]}"
        invite = caller.request(
            "INVITE",
            uri,
            dialog,
            user="+15550100",
            to=uri,
            from_header=f"<sip:+15550100@{TRUNK_HOST}>",
            body=SDP_TEMPLATE.format(host=TRUNK_HOST, port=caller_rtp.port),
        )
        caller.send(invite)
        arrived = next_request(callee, "INVITE", 3.0)
        if arrived is None:
            result.failure = "the INVITE did not reach 202"
            return result
        request, server = arrived
        towards_callee = sdp_media(request.body)
        tag = secrets.token_hex(4)
        callee.sock.sendto(make_response(request, 180, to_tag=tag).to_bytes(), server)
        ctx.stop.wait(RING_SECONDS)  # ringing: the spray has the relay's ports to itself
        ok = make_response(request, 200, to_tag=tag)
        ok.headers.add("Contact", f"<sip:{VICTIM[0]}@{LOOPBACK}:{callee.port}>")
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = SDP_TEMPLATE.format(host=LOOPBACK, port=callee_rtp.port).encode()
        callee.sock.sendto(ok.to_bytes(), server)
        answer, _ = caller.final(dialog.call_id, 3.0)
        towards_caller = sdp_media(answer.body) if answer is not None else None
        if answer is None or answer.status != 200 or towards_caller is None:
            result.failure = f"the call was not answered ({answer.status if answer else 'none'})"
            return result
        if towards_callee is None:
            result.failure = "the INVITE to 202 had no SDP"
            return result
        result.answered = True
        remote_tag = to_tag(answer)
        contact = answer.headers.get("Contact") or ""
        target = NameAddr.parse(contact).uri if contact else caller.server_uri
        caller.send(
            caller.request("ACK", target, dialog, user="+15550100", to=uri, to_tag=remote_tag)
        )
        started = time.monotonic()
        for sequence in range(VICTIM_PACKETS):
            caller_rtp.sock.sendto(rtp_packet(sequence, CALLER_SSRC, b"\xd5"), towards_caller)
            callee_rtp.sock.sendto(rtp_packet(sequence, CALLEE_SSRC, b"\x2a"), towards_callee)
            caller_rtp.drain()
            callee_rtp.drain()
            time.sleep(max(0.0, started + (sequence + 1) * 0.02 - time.monotonic()))
        _drain_for(0.3, caller_rtp, callee_rtp)
        dialog.cseq += 1
        bye = caller.request("BYE", target, dialog, user="+15550100", to=uri, to_tag=remote_tag)
        caller.send(bye)
        ended = next_request(callee, "BYE", 2.0)
        if ended is not None:
            callee.sock.sendto(make_response(ended[0], 200).to_bytes(), ended[1])
        caller.final(dialog.call_id, 2.0)
        result.callee_got_caller = callee_rtp.of(CALLER_SSRC)
        result.caller_got_callee = caller_rtp.of(CALLEE_SSRC)
        result.injected = callee_rtp.of(ATTACKER_SSRC) + caller_rtp.of(ATTACKER_SSRC)
        return result
    finally:
        caller.close()
        caller_rtp.close()
        callee_rtp.close()


def _drain_for(seconds: float, *ends: RtpCounts) -> None:
    """Read what is still in flight for `seconds` (the last packets of a stream)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for end in ends:
            end.drain()
        time.sleep(0.02)


class Spray(threading.Thread):
    """One RTP packet to every port of the relay range, ten rounds a second, until told
    to stop or `max_rounds`; counts what comes back to it, by SSRC."""

    def __init__(self, ports: Sequence[int], max_rounds: int) -> None:
        super().__init__(name="spray", daemon=True)
        self.ports = ports
        self.max_rounds = max_rounds
        self.end = RtpCounts(ATTACKER)
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for sequence in range(self.max_rounds):
            if self.stop.is_set():
                break
            round_start = time.monotonic()
            packet = rtp_packet(sequence, ATTACKER_SSRC)
            for port in self.ports:
                with contextlib.suppress(OSError):
                    self.end.sock.sendto(packet, (LOOPBACK, port))
                    self.sent += 1
            self.end.drain()
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - round_start)))
        _drain_for(0.3, self.end)


def attack_rtp_spray(ctx: AttackContext) -> Outcome:
    """Spray the relay range while the victim's calls ring, then while they talk.

    got: the victims' audio packets that reached the attacker, and the attacker's that
    reached a victim (`gained` is their sum); also how much of each victim call's audio
    reached the other end.
    """
    spray = Spray(list(ctx.relay), int(ctx.seconds * 10) + 1)
    callee = SipSocket(LOOPBACK, ctx.sip)
    calls: list[VictimCall] = []
    notes: list[str] = []
    try:
        registered, _ = register(callee, *VICTIM)
        if registered is None or registered.status != 200:
            return Outcome("-", "-", None, [f"202 could not register: {registered}"])
        deadline = ctx.deadline()
        spray.start()
        per_call = RING_SECONDS + VICTIM_PACKETS * 0.02 + 1.0
        while len(calls) < 10 and not ctx.stop.is_set():
            if calls and time.monotonic() + per_call > deadline:
                break
            calls.append(victim_call(ctx, callee))
        spray.stop.set()
        spray.join(5)
    finally:
        spray.stop.set()
        callee.close()
        spray.end.close()
    stolen = spray.end.others(ATTACKER_SSRC)
    own = spray.end.of(ATTACKER_SSRC)
    injected = sum(call.injected for call in calls)
    answered = [call for call in calls if call.answered]
    notes += [f"victim call failed: {call.failure}" for call in calls if call.failure]
    per_call_text = ", ".join(f"{c.callee_got_caller}/{c.caller_got_callee}" for c in answered)
    return Outcome(
        f"{spray.sent} RTP packets to {len(spray.ports)} ports during {len(calls)} calls"
        f" that rang {RING_SECONDS:g} s",
        f"{stolen} of the calls' audio packets received ({own} of its own back);"
        f" {injected} of its packets reached a victim; each call's audio delivered"
        f" (of {VICTIM_PACKETS}) callee/caller: {per_call_text or 'none'}",
        stolen + injected if answered else None,
        notes,
    )


def attack_register_replay(ctx: AttackContext) -> Outcome:
    victim = SipSocket(LOOPBACK, ctx.sip)
    attacker = SipSocket(ATTACKER, ctx.sip)
    try:
        dialog = Dialog()
        response, credentials = register(victim, *VICTIM, dialog=dialog)
        if response is None or response.status != 200 or credentials is None:
            return Outcome("-", "-", None, [f"the victim's REGISTER failed: {response}"])
        accepted = bound = replays = 0
        answers: dict[str, int] = {}
        deadline = ctx.deadline()
        aor = f"sip:{VICTIM[0]}@{LOOPBACK}"
        while replays < 20 and time.monotonic() < deadline and not ctx.stop.is_set():
            dialog.cseq += 1
            replay = attacker.request(
                "REGISTER",
                attacker.server_uri,
                dialog,
                user=VICTIM[0],
                to=aor,
                extra=[("Expires", "300"), ("Authorization", credentials)],
            )
            replays += 1
            answer, _ = attacker.exchange(replay, dialog.call_id, 1.0)
            _tally(answers, answer)
            if answer is not None and answer.status == 200:
                accepted += 1
                contacts = " ".join(answer.headers.fields("Contact"))
                bound += f"{ATTACKER}:{attacker.port}" in contacts
            ctx.stop.wait(ctx.seconds / 25)
        return Outcome(
            f"{replays} replayed REGISTERs",
            f"{accepted} accepted; attacker bound as {VICTIM[0]}: {'yes' if bound else 'no'}"
            f" (answers {_shown(answers)})",
            accepted,
        )
    finally:
        victim.close()
        attacker.close()


def attack_invite_replay(ctx: AttackContext) -> Outcome:
    victim = SipSocket(LOOPBACK, ctx.sip)
    attacker = SipSocket(ATTACKER, ctx.sip)
    try:
        answer, invite = place_call(victim, PHONE_EXTENSION, PHONE_PASSWORD)
        credentials = header_of(invite, "Proxy-Authorization") or header_of(invite, "Authorization")
        if answer is None or answer.status != 200 or credentials is None:
            return Outcome("-", "-", None, [f"the victim's call failed: {answer}"])
        uri = invite.decode().split(" ")[1]
        calls = replays = 0
        answers: dict[str, int] = {}
        deadline = ctx.deadline()
        while replays < 20 and time.monotonic() < deadline and not ctx.stop.is_set():
            dialog = Dialog(cseq=2)
            body = SDP_TEMPLATE.format(host=ATTACKER, port=free_port(even=True))
            replay = attacker.request(
                "INVITE",
                uri,
                dialog,
                user=PHONE_EXTENSION,
                to=uri,
                extra=[("Proxy-Authorization", credentials)],
                body=body,
            )
            replays += 1
            final, provisional = attacker.exchange(replay, dialog.call_id, 3.0)
            _tally(answers, final)
            if final is not None and final.status < 300:
                calls += 1
                end_answered_call(attacker, dialog, final, user=PHONE_EXTENSION, to=uri)
            elif final is not None:
                calls += provisional > 0
                ack_failure(attacker, replay, final)
            ctx.stop.wait(ctx.seconds / 25)
        return Outcome(
            f"{replays} replayed INVITEs",
            f"{calls} calls reached the trunk as {PHONE_EXTENSION} (answers {_shown(answers)})",
            calls,
        )
    finally:
        victim.close()
        attacker.close()


def _tally(answers: dict[str, int], response: SipResponse | None) -> None:
    key = str(response.status) if response is not None else "none"
    answers[key] = answers.get(key, 0) + 1


def _shown(answers: dict[str, int]) -> str:
    return ", ".join(f"{n}x{key}" for key, n in sorted(answers.items())) or "none"


PASSWORD_AT_GUESS = 15  # past [sip] auth_max_failures (10 by default)


def attack_password_guessing(ctx: AttackContext) -> Outcome:
    attacker = SipSocket(ATTACKER, ctx.sip)
    guesses = answered = 0
    found: int | None = None
    deadline = ctx.deadline()
    try:
        while guesses < 30 and time.monotonic() < deadline and not ctx.stop.is_set():
            guesses += 1
            password = VICTIM[1] if guesses == PASSWORD_AT_GUESS else f"guess-{guesses:04d}"
            response, _ = register(attacker, VICTIM[0], password, timeout=0.5)
            if response is None:
                continue
            answered += 1
            if response.status == 200 and found is None:
                found = guesses
        got = f"password found at guess {found}" if found else "password not found"
        notes = []
        if guesses < PASSWORD_AT_GUESS:
            notes.append(f"time bound hit after {guesses} guesses, before the right one")
        return Outcome(
            f"{guesses} guesses (right one #{PASSWORD_AT_GUESS})",
            f"{got}; {answered} of {guesses} answered",
            1 if found else 0,
            notes,
        )
    finally:
        attacker.close()


def attack_tcp_exhaustion(ctx: AttackContext, max_connections: int = 3000) -> Outcome:
    """Slowloris from one host: TCP connections that each start a request and hold it.

    While they are held (after the last is opened, and again at the end) three legitimate
    requests from 127.0.0.1 are tried: a call from 202 over UDP, a TCP OPTIONS and a
    portal page. `gained` counts those that failed: what the attack denied.
    """
    connections: list[socket.socket] = []
    deadline = ctx.deadline()
    refused = 0
    failed: dict[str, int] = {}
    tried = 0
    try:
        while len(connections) < max_connections and time.monotonic() < deadline - 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((ATTACKER, 0))
            sock.settimeout(0.2)
            try:
                sock.connect(ctx.sip)
                # The start of a request that never ends (slowloris).
                sock.send(f"OPTIONS sip:{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/TCP x".encode())
            except OSError:
                refused += 1
                sock.close()
                if refused > 50:
                    break
                continue
            sock.setblocking(False)
            connections.append(sock)
        for _round in range(2):
            tried += 1
            for name, answered in legitimate_probes(ctx).items():
                if not answered:
                    failed[name] = failed.get(name, 0) + 1
            if _round == 0:
                ctx.stop.wait(max(0.0, deadline - time.monotonic()))
        held = 0
        for sock in connections:
            try:
                held += sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                continue
        denied = ", ".join(f"{name} {n}/{tried}" for name, n in failed.items()) or "none"
        return Outcome(
            f"{len(connections)} connections opened ({refused} refused or timed out)",
            f"{held} still open at the end; legitimate requests that failed: {denied}",
            sum(failed.values()),
        )
    finally:
        for sock in connections:
            sock.close()


def legitimate_probes(ctx: AttackContext) -> dict[str, bool]:
    """A call (202 over UDP), a TCP OPTIONS and a portal page from 127.0.0.1: answered?"""
    ua = SipSocket(LOOPBACK, ctx.sip)
    try:
        answer, _ = place_call(ua, *VICTIM, timeout=3.0)
    finally:
        ua.close()
    try:
        with urllib.request.urlopen(f"{ctx.server.portal_url}/login", timeout=3.0) as page:
            portal = page.status < 500
    except urllib.error.HTTPError as exc:
        portal = exc.code < 500
    except OSError:
        portal = False
    return {
        "call": answer is not None and answer.status == 200,
        "TCP OPTIONS": sip_options(ctx.server.sip_port, timeout=3.0, transport="tcp") is not None,
        "portal": portal,
    }


def attack_invite_flood(ctx: AttackContext) -> Outcome:
    """Unauthenticated INVITEs, a new Call-ID each, at ctx.flood_rate a second; the
    attacker never ACKs. After the flood it keeps reading until the answers stop (a
    non-2xx final answer is retransmitted until Timer H, 32 s) to measure how many
    answers one INVITE draws."""
    ua = SipSocket(ATTACKER, ctx.sip)
    ua.sock.setblocking(False)
    tally = FloodTally()
    deadline = ctx.deadline()
    started = time.monotonic()
    rate = ctx.flood_rate
    max_count = int(rate * ctx.seconds)
    uri = f"sip:{CALLEE}@{LOOPBACK}:{ctx.sip[1]}"
    body = SDP_TEMPLATE.format(host=ATTACKER, port=40000)
    sent_bytes = 0
    try:
        while ua.sent < max_count and time.monotonic() < deadline and not ctx.stop.is_set():
            due = started + ua.sent / rate
            if time.monotonic() < due:
                time.sleep(min(0.01, due - time.monotonic()))
            else:
                invite = ua.request("INVITE", uri, Dialog(), user="666", to=uri, body=body)
                with contextlib.suppress(OSError):
                    ua.send(invite)
                    sent_bytes += len(invite)
            tally.drain(ua.sock)
        in_window = tally.answers
        flood_end = time.monotonic()
        last = tally.answers
        quiet_since = time.monotonic()
        # Bounded: Timer H (32 s) plus slack; 3 s without an answer ends it sooner.
        while time.monotonic() < flood_end + 36 and time.monotonic() - quiet_since < 3:
            time.sleep(0.1)
            tally.drain(ua.sock)
            if tally.answers != last:
                last, quiet_since = tally.answers, time.monotonic()
    finally:
        ua.close()
    calls = sum(n for status, n in tally.statuses.items() if 180 <= status < 300)
    shown = ", ".join(f"{n}x{status}" for status, n in sorted(tally.statuses.items()))
    sent = max(ua.sent, 1)
    return Outcome(
        f"{ua.sent} INVITEs ({rate:g}/s, {sent_bytes} B)",
        f"{calls} calls; answers {shown or 'none'} ({tally.bytes} B):"
        f" {tally.answers / sent:.2f} answers per INVITE"
        f" ({in_window / sent:.2f} within the flood's {ctx.seconds:g} s),"
        f" {tally.bytes / max(sent_bytes, 1):.2f} answer bytes per INVITE byte",
        calls,
    )


@dataclass
class FloodTally:
    """Answers read by a flooder: how many of each status, and their bytes."""

    statuses: dict[int, int] = field(default_factory=dict)
    answers: int = 0
    bytes: int = 0

    def drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, TimeoutError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    continue
                return
            if data.startswith(b"SIP/2.0 "):
                with contextlib.suppress(ValueError, IndexError):
                    status = int(data[8:11])
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    self.answers += 1
                    self.bytes += len(data)


CONTACT_CAP = 10  # [sip] max_contacts' default: what a user may hold by right


def attack_register_flood(ctx: AttackContext) -> Outcome:
    """203 (the attacker has its password) registers a new Contact as fast as the
    challenges allow. `gained`: the bindings 203 holds beyond CONTACT_CAP, the most any
    200 listed (a 200 listing over ~1,200 no longer fits a datagram and is not sent)."""
    ua = SipSocket(ATTACKER, ctx.sip)
    accepted = sent = 0
    bindings = 0
    answers: dict[str, int] = {}
    deadline = ctx.deadline()
    try:
        while sent < 2000 and time.monotonic() < deadline and not ctx.stop.is_set():
            sent += 1
            response, _ = register(ua, *INSIDER, contact_user=f"{INSIDER[0]}-{sent}", timeout=0.5)
            _tally(answers, response)
            if response is not None and response.status == 200:
                accepted += 1
                bindings = max(bindings, len(response.headers.fields("Contact")))
        return Outcome(
            f"{sent} REGISTERs as {INSIDER[0]}, each a new Contact",
            f"{accepted} accepted; {INSIDER[0]} holds {bindings} bindings"
            f" (answers {_shown(answers)})",
            max(0, bindings - CONTACT_CAP),
        )
    finally:
        ua.close()


def attack_callerid_spoof(ctx: AttackContext) -> Outcome:
    ua = SipSocket(ATTACKER, ctx.sip)
    marker = secrets.token_hex(6)
    try:
        answer, _ = place_call(
            ua,
            *INSIDER,
            from_header=f'"Bob Baker" <sip:{VICTIM[0]}@{LOOPBACK}>',
            extra=[
                ("P-Asserted-Identity", f"<sip:{SPOOFED_NUMBER}@{LOOPBACK}>"),
                ("Remote-Party-ID", f"<sip:{SPOOFED_NUMBER}@{LOOPBACK}>;party=calling"),
                ("Subject", f"spoof {marker}"),
            ],
        )
    finally:
        ua.close()
    sent = f"1 call as {INSIDER[0]} claiming {VICTIM[0]} and {SPOOFED_NUMBER}"
    if answer is None or answer.status >= 300:
        status = answer.status if answer else "no answer"
        return Outcome(sent, f"call not placed ({status})", None)
    presented, spoofed = "the trunk logged no such INVITE", None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        invite = _trunk_invite(ctx.trunk_dir, marker)
        if invite is not None:
            from_uri = NameAddr.parse(header_of(invite, "From") or "").uri
            identities = [
                ("From", from_uri),
                *(("PAI", v) for v in [header_of(invite, "P-Asserted-Identity")] if v),
                *(("RPID", v) for v in [header_of(invite, "Remote-Party-ID")] if v),
            ]
            presented = "presented with " + "; ".join(f"{n} {v}" for n, v in identities)
            # A claim counts when the trunk saw 202 or the made-up number as the caller.
            spoofed = sum(
                SPOOFED_NUMBER in value
                or value.startswith(f"sip:{VICTIM[0]}@")
                or f"<sip:{VICTIM[0]}@" in value
                for _name, value in identities
            )
            break
        ctx.stop.wait(0.2)
    return Outcome(sent, presented, spoofed)


def _trunk_invite(trunk_dir: Path, marker: str) -> bytes | None:
    for path in trunk_dir.glob("*.messages"):
        data = path.read_bytes()
        at = data.find(f"spoof {marker}".encode())
        if at < 0:
            continue
        start = data.rfind(b"INVITE sip:", 0, at)
        end = data.find(b"\r\n\r\n", at)
        return data[start : end if end >= 0 else None] if start >= 0 else None
    return None


ATTACKS: dict[str, Callable[[AttackContext], Outcome]] = {
    "none": attack_none,
    "rtp_spray": attack_rtp_spray,
    "register_replay": attack_register_replay,
    "invite_replay": attack_invite_replay,
    "password_guessing": attack_password_guessing,
    "tcp_exhaustion": attack_tcp_exhaustion,
    "invite_flood": attack_invite_flood,
    "register_flood": attack_register_flood,
    "callerid_spoof": attack_callerid_spoof,
}


# ---------------------------------------------------------------- the server


@dataclass
class BenchServer(CallrecServer):
    """The harness's `callrec serve`, run as `command` (another tree's `callrec` too).

    Its config holds only keys that both this tree and the tree before issue 10
    (f878279) know: that config refuses unknown keys, and what is measured is each
    tree's defaults. `trusted` hosts are taken for the trunk (rtp_spray's caller).
    The server starts with `nofile` as its soft open-file limit (the usual 1024 of a
    login shell or a systemd unit), not the bench's raised one; the hard limit is kept.
    """

    command: tuple[str, ...] = tuple(CALLREC)
    nofile: int | None = None
    trusted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        trusted = ", ".join(f'"{host}"' for host in self.trusted)
        self.config_path.write_text(
            f'[sip]\nlisten = "{self.sip_address}"\n{self.sip_config}'
            f'[trunk]\nuri = "sip:{HOST}:{self.trunk_port}"\ntrusted = [{trusted}]\n'
            f'[media]\nrtp_ports = "{self.rtp_first}-{self.rtp_last}"\n'
            f'[storage]\ndir = "{self.data_dir}"\n'
            f'[portal]\nlisten = "{HOST}:{self.portal_port}"\n'
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.command, *args, "--config", str(self.config_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, timeout: float = 15.0) -> None:
        log = self.log_path.open("ab")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The child inherits the limit at fork: lowered around Popen only.
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.nofile, hard), hard))
        try:
            self.process = process = subprocess.Popen(
                [*self.command, "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            log.close()

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"callrec serve exited early:\n{self.log()[-2000:]}")
            return sip_options(self.sip_port, timeout=0.3) is not None

        wait_until(answering, timeout=timeout, what="callrec serve answering OPTIONS")


# ---------------------------------------------------------------- one run


@dataclass
class SetupProbe:
    """Calls placed while the attack runs (201 from 127.0.0.1, hung up on answer):
    how many were answered and each one's setup, first INVITE to 200, in ms."""

    placed: int = 0
    answered: int = 0
    setup_ms: list[float] = field(default_factory=list)

    def run(self, ctx: AttackContext, interval: float = 0.5, max_calls: int = 200) -> None:
        ua = SipSocket(LOOPBACK, ctx.sip)
        deadline = ctx.deadline()
        try:
            while self.placed < max_calls and time.monotonic() < deadline:
                if ctx.stop.is_set():
                    break
                started = time.monotonic()
                answered_at: list[float] = []
                answer, _ = place_call(
                    ua, PHONE_EXTENSION, PHONE_PASSWORD, timeout=3.0, answered_at=answered_at
                )
                self.placed += 1
                if answer is not None and answer.status == 200 and answered_at:
                    self.answered += 1
                    self.setup_ms.append(1000 * (answered_at[0] - started))
                ctx.stop.wait(max(0.0, started + interval - time.monotonic()))
        finally:
            ua.close()


@dataclass
class Row:
    attack: str
    outcome: Outcome
    load_before: str
    counts: dict[str, int]
    calls_ok: int
    calls_placed: int
    setup_ms: list[float]
    probe: SetupProbe = field(default_factory=SetupProbe)
    error: str = ""

    def percent(self, part: str, whole: str) -> str:
        total = self.counts.get(whole, 0)
        return f"{100 * self.counts.get(part, 0) / total:.2f}" if total else "-"


def run_attack(name: str, args: argparse.Namespace, root: Path) -> Row:
    """A fresh callrec, `args.calls` held calls with audio, `name` in the middle."""
    plan = LevelPlan(args.calls, args.attack_seconds + 4.0, args.setup_rate)
    relay_count = relay_port_count(args.calls)
    relay_first = free_port(even=True, span=relay_count)
    server = BenchServer(
        root=root / "callrec",
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=relay_first,
        rtp_last=relay_first + relay_count - 1,
        sip_config=SIPP_DIGEST_CONFIG,
        command=tuple(args.serve_cmd),
        nofile=args.server_nofile or None,
        trusted=(TRUNK_HOST,),
    )
    server.add_user(PHONE_EXTENSION, "Bench Phone", PHONE_PASSWORD, "--mode", "never")
    server.add_user(VICTIM[0], "Bob Baker", VICTIM[1], "--mode", "never")
    server.add_user(INSIDER[0], "Mallory Insider", INSIDER[1], "--mode", "never")
    trunk_dir, phone_dir = root / "trunk", root / "phone"
    trunk_dir.mkdir(parents=True)
    phone_dir.mkdir(parents=True)
    media = free_port(even=True, span=8)
    trunk_media, phone_media = media, media + 4
    scenario = bench_scenario(root, alaw_audio(root))
    ctx = AttackContext(
        server,
        range(relay_first, relay_first + relay_count),
        args.attack_seconds,
        trunk_dir,
        args.flood_rate,
    )
    row = Row(name, Outcome("-", "-", None), load_average(), {}, 0, args.calls, [])
    server.start()
    try:
        with NftCounters(phone_media, trunk_media, (relay_first, server.rtp_last)) as counters:
            trunk: SippProcess = start_sipp(
                "uas_echo.xml",
                work_dir=trunk_dir,
                timeout_s=plan.timeout_s + 40,
                local_port=server.trunk_port,
                media_port=trunk_media,
                rtp_echo=True,
                calls=args.calls + TRUNK_SPARE_CALLS,
                trace_messages=name == "callerid_spoof",
            )
            with trunk:
                phone = start_sipp(
                    str(scenario),
                    work_dir=phone_dir,
                    timeout_s=plan.timeout_s,
                    ready_wait_s=0,
                    remote=server.sip_address,
                    local_port=free_port(),
                    media_port=phone_media,
                    callee=CALLEE,
                    caller=PHONE_EXTENSION,
                    user=PHONE_EXTENSION,
                    password=PHONE_PASSWORD,
                    extra=["-auth_uri", f"{CALLEE}@{server.sip_address}"],
                    call_length_ms=round(plan.call_length_s * 1000),
                    calls=args.calls,
                    rate=args.setup_rate,
                    max_concurrent=args.calls,
                )
                with phone:
                    all_up = wait_all_up(trunk_dir / "uas_echo.csv", args.calls, plan.ramp_s + 15)
                    row.outcome = run_bounded(ATTACKS[name], ctx, row.probe)
                    if not all_up:
                        row.outcome.notes.append("not every call was up when the attack began")
                    phone_result = phone.wait()
                trunk.stop()
            time.sleep(0.3)  # the last echoes in flight
            row.counts = counters.read()
        row.calls_ok = phone_result.successful_calls
        row.setup_ms = response_times(phone_dir, scenario.stem).get("setup", [])
    except Exception as exc:  # the table says what failed; the other attacks still run
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
    return row


def wait_all_up(trunk_stats: Path, calls: int, timeout: float) -> bool:
    """Wait until the trunk reports `calls` calls in progress (its stats, once a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = sipp_current_calls(trunk_stats)
        if current is not None and current >= calls:
            return True
        time.sleep(0.2)
    return False


# An attack's own bound is ctx.seconds; invite_flood then reads the answers' tail (≤ 36 s).
ATTACK_SLACK_S = 45.0


def run_bounded(
    attack: Callable[[AttackContext], Outcome], ctx: AttackContext, probe: SetupProbe
) -> Outcome:
    """Run the attack and the setup probe in threads; past the attack's time bound
    (plus ATTACK_SLACK_S) both are told to stop."""
    result: list[Outcome] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(attack(ctx))
        except BaseException as exc:  # reported in the table
            failure.append(exc)

    thread = threading.Thread(target=target, name="attack", daemon=True)
    prober = threading.Thread(target=probe.run, args=(ctx,), name="probe", daemon=True)
    thread.start()
    prober.start()
    thread.join(ctx.seconds + ATTACK_SLACK_S)
    ctx.stop.set()
    thread.join(10)
    prober.join(10)
    if failure:
        return Outcome("-", "-", None, [f"the attack failed: {failure[0]!r}"])
    if not result:
        return Outcome("-", "-", None, ["the attack did not end in time"])
    return result[0]


# ---------------------------------------------------------------- output


HEADER = (
    "| attack | load before | sent | attacker got | gained | RTP fwd % | RTP back % "
    "| held calls ok | held setup p99 ms | calls during attack ok | their setup p99 ms |"
)


def table(rows: Sequence[Row]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for row in rows:
        got = row.error or row.outcome.got
        gained = "?" if row.error or row.outcome.gained is None else str(row.outcome.gained)
        lines.append(
            f"| {row.attack} | {row.load_before} | {row.outcome.sent} | {got} | {gained} "
            f"| {row.percent('relay_to_trunk', 'phone_to_relay')} "
            f"| {row.percent('relay_to_phone', 'trunk_to_relay')} "
            f"| {row.calls_ok}/{row.calls_placed} | {percentile(row.setup_ms, 99)} "
            f"| {row.probe.answered}/{row.probe.placed} | {percentile(row.probe.setup_ms, 99)} |"
        )
    notes = [f"- {row.attack}: {note}" for row in rows for note in row.outcome.notes]
    return "\n".join(lines + (["", *notes] if notes else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20, help="legitimate calls held (1-200)")
    parser.add_argument("--setup-rate", type=float, default=10.0, help="their setups a second")
    parser.add_argument(
        "--attack-seconds", type=float, default=10.0, help="each attack's time bound (2-60)"
    )
    parser.add_argument(
        "--flood-rate", type=float, default=300.0, help="invite_flood's INVITEs a second (1-2000)"
    )
    parser.add_argument(
        "--serve-cmd",
        type=shlex.split,
        default=list(CALLREC),
        help="the callrec command to attack, e.g. another tree's venv/bin/callrec"
        " (default: this tree's)",
    )
    parser.add_argument(
        "--server-nofile",
        type=int,
        default=1024,
        help="callrec's soft open-file limit at start (0: the bench's own)",
    )
    parser.add_argument(
        "--only", default=",".join(ATTACKS), help=f"comma list among {', '.join(ATTACKS)}"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if (
        unknown
        or not 1 <= args.calls <= 200
        or not 2 <= args.attack_seconds <= 60
        or not 1 <= args.flood_rate <= 2000
    ):
        parser.error(f"bad options (unknown attacks: {unknown})")
    missing = environment_ok()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    print(f"server: {shlex.join(args.serve_cmd)} serve", file=sys.stderr, flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="callrec-attack-") as tmp:
        for name in names:
            row = run_attack(name, args, Path(tmp) / name)
            print(f"{name}: {row.error or row.outcome.got}", file=sys.stderr, flush=True)
            rows.append(row)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
