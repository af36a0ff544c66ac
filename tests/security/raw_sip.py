"""Hand-built SIP over raw UDP sockets, for attack tests against a real `callrec serve`.

An attacker replays headers byte for byte and sends floods no SIP stack would, so these
tests speak SIP themselves: one `RawUa` per source address (127.0.0.2 is "elsewhere").
"""

from __future__ import annotations

import select
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from testkit.harness import HOST, CallrecServer
from testkit.waiting import WaitTimeout, wait_until

ATTACKER_HOST = "127.0.0.2"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class RawUa:
    """One UDP socket at `host` talking SIP to callrec by hand."""

    server: CallrecServer
    host: str = HOST
    port: int = 0
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, self.port))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def contact_for(self, user: str) -> str:
        return f"sip:{user}@{self.host}:{self.port}"

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (HOST, self.server.sip_port))

    def receive(self, timeout: float = 5.0) -> SipMessage | None:
        """The next message, or None when nothing came within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except TimeoutError:
            return None
        return parse_message(data)

    def final(self, call_id: str, timeout: float = 5.0) -> SipResponse | None:
        """The next final response for `call_id` (provisionals and others skipped)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.receive(remaining)
            if message is None:
                return None
            if (
                isinstance(message, SipResponse)
                and message.status >= 200
                and message.headers.get("Call-ID") == call_id
            ):
                return message
        return None

    def request(
        self,
        method: str,
        uri: str,
        *,
        user: str,
        to_user: str | None = None,
        call_id: str,
        cseq: int,
        contact: str | None = None,
        headers: tuple[str, ...] = (),
        body: str = "",
    ) -> bytes:
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{to_user or user}@{HOST}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <{contact or self.contact_for(user)}>",
            *headers,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body.encode())}", "", ""]
        return "\r\n".join(lines).encode() + body.encode()

    def register(
        self,
        user: str,
        password: str,
        *,
        contact: str | None = None,
        call_id: str | None = None,
    ) -> tuple[SipResponse | None, str]:
        """REGISTER with digest: the final response and the Authorization value sent."""
        uri = f"sip:{self.server.sip_address}"
        call_id = call_id or f"reg-{uuid.uuid4().hex}"
        self.send(
            self.request("REGISTER", uri, user=user, call_id=call_id, cseq=1, contact=contact)
        )
        challenge = self.final(call_id)
        assert challenge is not None and challenge.status == 401, challenge
        value = build_authorization(
            preferred_challenge(challenge.headers.get_all("WWW-Authenticate")),
            "REGISTER",
            uri,
            user,
            password,
        )
        self.send(
            self.request(
                "REGISTER",
                uri,
                user=user,
                call_id=call_id,
                cseq=2,
                contact=contact,
                headers=(f"Authorization: {value}",),
            )
        )
        return self.final(call_id), value

    def invite_uri(self, number: str) -> str:
        return f"sip:{number}@{self.server.sip_address}"

    def sdp(self) -> str:
        return SDP.format(host=self.host, port=40_000)


def bindings(server: CallrecServer, extension: str) -> list[tuple[str, str]]:
    """(contact, received) of the user's registrations, read from callrec's SQLite store."""
    with sqlite3.connect(server.data_dir / "callrec.db", timeout=5) as db:
        rows = db.execute(
            "SELECT r.contact, r.received FROM registrations r JOIN users u ON u.id = r.user_id"
            " WHERE u.extension = ? ORDER BY r.id",
            (extension,),
        ).fetchall()
    return [(str(contact), str(received)) for contact, received in rows]


def wait_for_log(server: CallrecServer, text: str, count: int = 1, timeout: float = 10.0) -> str:
    """The server log once `text` appears `count` times in it (AssertionError if not)."""

    def logged() -> str | None:
        log = server.log()
        return log if log.count(text) >= count else None

    try:
        return wait_until(logged, timeout=timeout, what=f"{text!r} logged {count} time(s)")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}:\n{server.log()[-4000:]}") from None


class RawTrunk:
    """The trunk's address as a raw socket: counts INVITEs and answers them 486."""

    def __init__(self, server: CallrecServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, server.trunk_port))
        self.invites: list[SipRequest] = []

    def close(self) -> None:
        self.sock.close()

    def poll(self, timeout: float) -> None:
        """Take what arrives within `timeout`; answer each new INVITE with 486 Busy Here."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return
            data, address = self.sock.recvfrom(65535)
            message = parse_message(data)
            if isinstance(message, SipRequest) and message.method == "INVITE":
                if all(message.headers.get("Via") != i.headers.get("Via") for i in self.invites):
                    self.invites.append(message)
                busy = make_response(message, 486, to_tag=uuid.uuid4().hex[:8])
                self.sock.sendto(busy.to_bytes(), address)

    def wait_for_invites(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.invites) < count and time.monotonic() < deadline:
            self.poll(min(0.2, deadline - time.monotonic()))
