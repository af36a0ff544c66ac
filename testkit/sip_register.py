"""A phone's REGISTER with digest over raw UDP, for e2e tests that need a binding
without a softphone (SIPp cannot take an INVITE after its own REGISTER)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import SipResponse, parse_message

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Registered:
    """What a REGISTER came to: the UDP port it was sent from (free again afterwards,
    for a phone to bind and answer on), the final response, and the realm it was
    challenged with ("" when there was no challenge)."""

    port: int
    response: SipResponse
    realm: str


def register(sip_port: int, username: str, password: str, domain: str) -> Registered:
    """REGISTER `username`@`domain` to callrec's `sip_port` from a fresh UDP port,
    answering a 401 with `password`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        call_id = f"reg-{uuid.uuid4().hex}"
        uri = f"sip:{domain}"
        tag = uuid.uuid4().hex[:8]

        def send(cseq: int, *headers: str) -> SipResponse:
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                "Max-Forwards: 70",
                f"From: <sip:{username}@{domain}>;tag={tag}",
                f"To: <sip:{username}@{domain}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:{username}@{HOST}:{port}>",
                "Expires: 600",
                *headers,
                "Content-Length: 0",
                "",
                "",
            ]
            sock.sendto("\r\n".join(lines).encode(), (HOST, sip_port))
            while True:
                message = parse_message(sock.recv(65535))
                if isinstance(message, SipResponse) and message.status >= 200:
                    return message

        challenge = send(1)
        if challenge.status != 401:
            return Registered(port, challenge, "")
        offered = preferred_challenge(challenge.headers.get_all("WWW-Authenticate"))
        realm = offered.split('realm="', 1)[1].split('"', 1)[0]
        value = build_authorization(offered, "REGISTER", uri, username, password)
        return Registered(port, send(2, f"Authorization: {value}"), realm)
