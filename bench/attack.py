"""The attacks of issue 10 ("Trust") against a real `callrec serve` carrying real calls.

For each attack the bench starts a fresh `callrec serve` (testkit harness), a SIPp trunk
(uas_echo.xml, ``-rtp_echo``) and a SIPp phone (extension 201) that holds ``--calls``
calls with G.711 audio (bench/calls.py's looping ``rtp_stream`` scenario). Once the
trunk reports every call up, the attack runs from 127.0.0.2 for at most
``--attack-seconds`` (each attack also has a count bound), then the calls end by
themselves and everything is stopped by PID.

Per attack the table shows:

* sent: what the attacker sent (packets, requests, connections);
* attacker got: what it gained, measured from its own side (RTP packets it received,
  calls or bindings the server accepted, a password it found, connections it holds, how
  the trunk presented it); "0" means it was measured and is zero;
* RTP fwd/back %: the legitimate calls' RTP through the relay over the whole run, from
  nftables counters on ``lo`` (bench/calls.py NftCounters): relay-to-trunk against
  phone-to-relay, and relay-to-phone against what the trunk echoed. Above 100 % means
  packets that were not the phone's (or the trunk's) reached the far end;
* calls ok: the phone's successful calls of those it placed;
* setup p99: SIPp's timer from the authenticated INVITE to its 200, in ms.

The attacks (each a function `attack_*(ctx) -> Outcome`):

* rtp_spray: one RTP packet to every port of the relay range, ten rounds a second;
  got = RTP packets that came back to the attacker (the legitimate calls' audio).
* register_replay: the victim (202, from 127.0.0.1) registers; the attacker replays its
  Authorization with its own Contact, same Call-ID and higher CSeq; got = replays
  answered 200 and whether its Contact became a binding of 202.
* invite_replay: the victim (201, from 127.0.0.1) places one call; the attacker replays
  its Proxy-Authorization in new INVITEs (new Call-ID, tag, branch); got = calls that
  reached the trunk (18x/2xx), which would be billed to 201.
* password_guessing: REGISTERs as 202 with wrong passwords, the right one as guess 15;
  got = whether it was found, and how many guesses were answered.
* tcp_exhaustion: TCP connections from 127.0.0.2, each sending the start of a request
  and holding it (slowloris); got = connections still open at the end, and whether a
  TCP OPTIONS from 127.0.0.1 was answered meanwhile.
* invite_flood: unauthenticated INVITEs, new Call-ID each, at ``--flood-rate`` a second;
  got = calls (2xx) and responses received.
* register_flood: 203, whose password the attacker has (an insider or a leaked
  device), registers a new Contact (new Call-ID) as fast as the challenges allow; got =
  bindings 203 holds after it (the last 200's Contacts).
* callerid_spoof: 203 calls the trunk claiming From 202 and P-Asserted-Identity
  +18005550100 (the trunk logs what it receives); got = how the trunk presented the call.

Run as root (nftables) from the repository root; the default run takes about five
minutes::

    python -m bench.attack --calls 20 --attack-seconds 10
    python -m bench.attack --only none,rtp_spray --calls 10
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import re
import resource
import secrets
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from b2bua.message import NameAddr, SipParseError, SipResponse, parse_message
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
from testkit.harness import SIPP_DIGEST_CONFIG, CallrecServer, free_port, sip_options
from testkit.sipp_runner import SippProcess, environment_ok, start_sipp

LOOPBACK = "127.0.0.1"
ATTACKER = "127.0.0.2"
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
) -> tuple[SipResponse | None, bytes]:
    """An authenticated call from `user` that hangs up as soon as it is answered.

    Returns the final answer to the authenticated INVITE and that INVITE's bytes.
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
    notes: list[str] = field(default_factory=list)


def attack_none(ctx: AttackContext) -> Outcome:
    """The baseline: the same calls, no attack."""
    ctx.stop.wait(ctx.seconds)
    return Outcome("-", "-")


def attack_rtp_spray(ctx: AttackContext) -> Outcome:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    sock.setblocking(False)
    ports = list(ctx.relay)
    sent = received = sequence = 0
    deadline = ctx.deadline()
    max_rounds = int(ctx.seconds * 10) + 1
    try:
        for _ in range(max_rounds):
            if time.monotonic() >= deadline:
                break
            round_start = time.monotonic()
            packet = struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, 160 * sequence, 0xBAD)
            packet += b"\x55" * 160
            sequence += 1
            for port in ports:
                with contextlib.suppress(OSError):
                    sock.sendto(packet, (LOOPBACK, port))
                    sent += 1
            while True:
                try:
                    sock.recv(2048)
                    received += 1
                except BlockingIOError:
                    break
                except OSError:
                    continue
            time.sleep(max(0.0, 0.1 - (time.monotonic() - round_start)))
        time.sleep(0.2)
        with contextlib.suppress(OSError):
            while sock.recv(2048):
                received += 1
    finally:
        sock.close()
    return Outcome(f"{sent} RTP packets to {len(ports)} ports", f"{received} RTP packets received")


def attack_register_replay(ctx: AttackContext) -> Outcome:
    victim = SipSocket(LOOPBACK, ctx.sip)
    attacker = SipSocket(ATTACKER, ctx.sip)
    try:
        dialog = Dialog()
        response, credentials = register(victim, *VICTIM, dialog=dialog)
        if response is None or response.status != 200 or credentials is None:
            return Outcome("-", "-", [f"the victim's REGISTER failed: {response}"])
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
            return Outcome("-", "-", [f"the victim's call failed: {answer}"])
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
            notes,
        )
    finally:
        attacker.close()


def attack_tcp_exhaustion(ctx: AttackContext, max_connections: int = 3000) -> Outcome:
    connections: list[socket.socket] = []
    deadline = ctx.deadline()
    refused = 0
    probes: list[bool] = []
    try:
        while len(connections) < max_connections and time.monotonic() < deadline - 2:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((ATTACKER, 0))
            sock.settimeout(0.5)
            try:
                sock.connect(ctx.sip)
                # The start of a request that never ends (slowloris).
                sock.send(f"OPTIONS sip:{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/TCP x".encode())
            except OSError:
                refused += 1
                sock.close()
                if refused > 200:
                    break
                continue
            sock.setblocking(False)
            connections.append(sock)
            if len(connections) % 500 == 0:
                probes.append(
                    sip_options(ctx.server.sip_port, timeout=1.0, transport="tcp") is not None
                )
        probes.append(sip_options(ctx.server.sip_port, timeout=2.0, transport="tcp") is not None)
        ctx.stop.wait(max(0.0, deadline - time.monotonic()))
        probes.append(sip_options(ctx.server.sip_port, timeout=2.0, transport="tcp") is not None)
        held = 0
        for sock in connections:
            try:
                held += sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                continue
        answered = sum(probes)
        return Outcome(
            f"{len(connections)} connections opened ({refused} refused)",
            f"{held} still open at the end; legit TCP OPTIONS answered {answered}/{len(probes)}",
        )
    finally:
        for sock in connections:
            sock.close()


def attack_invite_flood(ctx: AttackContext, rate: float = 300.0) -> Outcome:
    ua = SipSocket(ATTACKER, ctx.sip)
    ua.sock.setblocking(False)
    statuses: dict[int, int] = {}
    deadline = ctx.deadline()
    started = time.monotonic()
    max_count = int(rate * ctx.seconds)
    uri = f"sip:{CALLEE}@{LOOPBACK}:{ctx.sip[1]}"
    body = SDP_TEMPLATE.format(host=ATTACKER, port=40000)
    try:
        while ua.sent < max_count and time.monotonic() < deadline and not ctx.stop.is_set():
            due = started + ua.sent / rate
            if time.monotonic() < due:
                time.sleep(min(0.01, due - time.monotonic()))
            else:
                with contextlib.suppress(OSError):
                    ua.send(ua.request("INVITE", uri, Dialog(), user="666", to=uri, body=body))
            _drain(ua.sock, statuses)
        time.sleep(0.5)
        _drain(ua.sock, statuses)
    finally:
        ua.close()
    calls = sum(n for status, n in statuses.items() if 200 <= status < 300)
    shown = ", ".join(f"{n}x{status}" for status, n in sorted(statuses.items()))
    return Outcome(f"{ua.sent} INVITEs ({rate:g}/s)", f"{calls} calls; answers {shown or 'none'}")


def _drain(sock: socket.socket, statuses: dict[int, int]) -> None:
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
                statuses[status] = statuses.get(status, 0) + 1


def attack_register_flood(ctx: AttackContext) -> Outcome:
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
                bindings = sum(
                    len(NameAddr.parse(value).uri) > 0
                    for value in response.headers.get_all("Contact")
                )
        return Outcome(
            f"{sent} REGISTERs as {INSIDER[0]}, each a new Contact",
            f"{accepted} accepted; {INSIDER[0]} holds {bindings} bindings"
            f" (answers {_shown(answers)})",
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
    if answer is None or answer.status >= 300:
        return Outcome("1 call", f"call not placed ({answer.status if answer else 'no answer'})")
    presented = "the trunk logged no such INVITE"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        invite = _trunk_invite(ctx.trunk_dir, marker)
        if invite is not None:
            claims = [
                f"From {NameAddr.parse(header_of(invite, 'From') or '').uri}",
                *(f"PAI {v}" for v in [header_of(invite, "P-Asserted-Identity")] if v),
                *(f"RPID {v}" for v in [header_of(invite, "Remote-Party-ID")] if v),
            ]
            presented = "presented with " + "; ".join(claims)
            break
        ctx.stop.wait(0.2)
    return Outcome(f"1 call as {INSIDER[0]} claiming {VICTIM[0]} and {SPOOFED_NUMBER}", presented)


def _trunk_invite(trunk_dir: Path, marker: str) -> bytes | None:
    for path in trunk_dir.glob("*.messages"):
        data = path.read_bytes()
        at = data.find(f"spoof {marker}".encode())
        if at < 0:
            continue
        start = data.rfind(b"INVITE sip:", 0, at)
        return data[start:at] if start >= 0 else None
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


# ---------------------------------------------------------------- one run


@dataclass
class Row:
    attack: str
    outcome: Outcome
    load_before: str
    counts: dict[str, int]
    calls_ok: int
    calls_placed: int
    setup_ms: list[float]
    error: str = ""

    def percent(self, part: str, whole: str) -> str:
        total = self.counts.get(whole, 0)
        return f"{100 * self.counts.get(part, 0) / total:.1f}" if total else "-"


def run_attack(name: str, args: argparse.Namespace, root: Path) -> Row:
    """A fresh callrec, `args.calls` held calls with audio, `name` in the middle."""
    plan = LevelPlan(args.calls, args.attack_seconds + 4.0, args.setup_rate)
    relay_count = relay_port_count(args.calls)
    relay_first = free_port(even=True, span=relay_count)
    server = CallrecServer(
        root=root / "callrec",
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=relay_first,
        rtp_last=relay_first + relay_count - 1,
        sip_config=SIPP_DIGEST_CONFIG,
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
        server, range(relay_first, relay_first + relay_count), args.attack_seconds, trunk_dir
    )
    row = Row(name, Outcome("-", "-"), load_average(), {}, 0, args.calls, [])
    server.start()
    try:
        with NftCounters(phone_media, trunk_media, (relay_first, server.rtp_last)) as counters:
            trunk: SippProcess = start_sipp(
                "uas_echo.xml",
                work_dir=trunk_dir,
                timeout_s=plan.timeout_s,
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
                    if not all_up:
                        row.outcome.notes.append("not every call was up when the attack began")
                    row.outcome = run_bounded(ATTACKS[name], ctx)
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


def run_bounded(attack: Callable[[AttackContext], Outcome], ctx: AttackContext) -> Outcome:
    """Run the attack in a thread; past its time bound (plus slack) it is told to stop."""
    result: list[Outcome] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(attack(ctx))
        except BaseException as exc:  # reported in the table
            failure.append(exc)

    thread = threading.Thread(target=target, name="attack", daemon=True)
    thread.start()
    thread.join(ctx.seconds + 15)
    ctx.stop.set()
    thread.join(10)
    if failure:
        return Outcome("-", "-", [f"the attack failed: {failure[0]!r}"])
    if not result:
        return Outcome("-", "-", ["the attack did not end in time"])
    return result[0]


# ---------------------------------------------------------------- output


HEADER = (
    "| attack | load before | sent | attacker got | RTP fwd % | RTP back % | calls ok "
    "| setup p99 ms |"
)


def table(rows: Sequence[Row]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for row in rows:
        got = row.error or row.outcome.got
        lines.append(
            f"| {row.attack} | {row.load_before} | {row.outcome.sent} | {got} "
            f"| {row.percent('relay_to_trunk', 'phone_to_relay')} "
            f"| {row.percent('relay_to_phone', 'trunk_to_relay')} "
            f"| {row.calls_ok}/{row.calls_placed} | {percentile(row.setup_ms, 99)} |"
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
        "--only", default=",".join(ATTACKS), help=f"comma list among {', '.join(ATTACKS)}"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not 1 <= args.calls <= 200 or not 2 <= args.attack_seconds <= 60:
        parser.error(f"bad options (unknown attacks: {unknown})")
    missing = environment_ok()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
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
