"""End-to-end SIP over TLS through a real `callrec serve`, with baresip phones and
trunks (`testkit/baresip.py`) and `trustme` certificates:
- a phone registers over TLS and calls out to a SIPp trunk over UDP, audio both ways;
- the trunk calls that phone, and callrec reaches it over the phone's own TLS
  connection (the phone does not listen for TLS, so a new connection would fail);
- callrec calls out to a trunk over TLS, verifying its certificate (and refusing a
  trunk whose certificate its CA did not sign), and a trusted trunk calls in over TLS;
- sips: URIs (by hand over TLS: baresip 1.0 cannot register one) register, and a call
  from the trunk reaches the sips: contact over its connection;
- tshark on loopback sees TLS and no SIP in clear text on the phone's leg, and SIP in
  clear text on the UDP trunk leg of the same call (the capture works)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import trustme

from b2bua.digest import build_authorization, preferred_challenge
from b2bua.message import (
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
)
from testkit.audio import chirp, peak_correlation, rms
from testkit.baresip import (
    CALL_ESTABLISHED,
    INCOMING_CALL,
    Baresip,
    account,
    registered_over,
)
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, free_port
from testkit.sipp_runner import start_sipp
from testkit.waiting import wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "pw-tls-100"


@dataclass
class Pki:
    folder: Path
    ca: Path  # the CA's certificate (PEM)
    callrec: Path  # callrec's certificate and key for 127.0.0.1
    trunk: Path  # the trunk's, same CA
    rogue_trunk: Path  # a trunk certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for name, authority in (("callrec", ca), ("trunk", ca), ("rogue", trustme.CA())):
        leaf = authority.issue_cert(HOST, "localhost")
        leaf.private_key_and_cert_chain_pem.write_to_path(str(folder / f"{name}.pem"))
    return Pki(
        folder,
        folder / "ca.pem",
        folder / "callrec.pem",
        folder / "trunk.pem",
        folder / "rogue.pem",
    )


@dataclass
class TlsCallrec:
    server: CallrecServer
    tls_port: int


def tls_server(
    root: Path, pki: Pki, *, trunk_uri: str | None = None, trusted: str | None = None
) -> TlsCallrec:
    """A `callrec serve` (not started) with TLS on a free port, the CA as tls_ca, and
    user 100; `trunk_uri` replaces the harness's UDP trunk, `trusted` is a trusted host."""
    rtp_first = free_port(even=True, span=200)
    tls_port = free_port(socket.SOCK_STREAM)
    server = CallrecServer(
        root=root,
        sip_port=free_port(),
        trunk_port=free_port(),
        rtp_first=rtp_first,
        rtp_last=rtp_first + 199,
        sip_config=(
            f'listen_tls = "{HOST}:{tls_port}"\n'
            f'tls_certificate = "{pki.callrec}"\ntls_ca = "{pki.ca}"\n'
        ),
    )
    if trunk_uri is not None:
        text = server.config_path.read_text()
        default = f'uri = "sip:{HOST}:{server.trunk_port}"'
        assert default in text
        trunk = f'uri = "{trunk_uri}"' + (f'\ntrusted = ["{trusted}"]' if trusted else "")
        server.config_path.write_text(text.replace(default, trunk))
    server.add_user("100", "Tess Ellis", PASSWORD)
    return TlsCallrec(server, tls_port)


@pytest.fixture(scope="module")
def callrec(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsCallrec]:
    tls = tls_server(tmp_path_factory.mktemp("callrec-tls"), pki)
    yield from (tls for _ in tls.server.serving())


def tls_phone(
    callrec: TlsCallrec,
    pki: Pki,
    work_dir: Path,
    *,
    commands: list[str],
    seconds: float,
    play: Path | None = None,
) -> Baresip:
    """Extension 100 on baresip, registering over TLS and checking callrec's certificate."""
    return Baresip(
        work_dir,
        account=account("100", PASSWORD, HOST, callrec.tls_port, transport="tls"),
        ca=pki.ca,
        commands=commands,
        time_limit_s=seconds,
        play=play,
    )


def test_startup_lines_name_the_tls_listener(callrec: TlsCallrec) -> None:
    expected = f"(udp, tcp, tls on {HOST}:{callrec.tls_port})"
    serving = f"callrec serving SIP on {callrec.server.sip_address} {expected}"
    # SIP answers (the harness's sign of life) before the portal is up and this line said.
    wait_until(lambda: serving in callrec.server.log(), timeout=10, what="the serving line")
    assert f"listening for SIP on {callrec.server.sip_address} {expected}" in callrec.server.log()


def test_phone_over_tls_registers_and_calls_a_udp_trunk(
    callrec: TlsCallrec, pki: Pki, tmp_path: Path
) -> None:
    server = callrec.server
    before = len(server.calls())
    source = chirp(tmp_path / "chirp.wav", seconds=4.0)
    trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=40)
    phone = tls_phone(
        callrec,
        pki,
        tmp_path,
        commands=[f"/dial {TRUNK_NUMBER}"],
        seconds=7,
        play=tmp_path / "chirp.wav",
    )
    phone.run_call("tls")
    assert trunk.wait().ok
    cdr = server.wait_for_calls(before + 1)[0]
    assert (cdr["direction"], cdr["disposition"]) == ("outbound", "answered")
    assert cdr["caller"]["extension"] == "100"
    assert ";transport=tls: 0 -> 1 binding(s)" in server.log()
    heard, rate = sf.read(phone.heard()[-1], dtype="int16")
    assert rate == 8000
    # The trunk echoes: the phone hears its own chirp, relayed both ways.
    assert peak_correlation(source[:8000], heard) > 0.8


def test_the_trunk_reaches_a_tls_phone_over_its_own_connection(
    callrec: TlsCallrec, pki: Pki, tmp_path: Path
) -> None:
    server = callrec.server
    before = len(server.calls())
    chirp(tmp_path / "chirp.wav", seconds=15.0)  # longer than the call: it ends it
    # No certificate: this phone cannot take a TLS connection, only use its own.
    phone = tls_phone(
        callrec,
        pki,
        tmp_path,
        commands=[],
        seconds=20,
        play=tmp_path / "chirp.wav",
    )
    try:
        phone.start()
        phone.wait_for(registered_over("tls"), timeout=10)
        result = server.run_sipp_from_trunk(
            tmp_path / "trunk", callee="100", caller="555", call_length_ms=4000, timeout_s=30
        )
        assert result.ok, result.summary()
        phone.wait_for(INCOMING_CALL, timeout=5)
        assert "tls connect to" not in server.log()  # no new connection was tried
    finally:
        phone.stop()
    cdr = server.wait_for_calls(before + 1)[0]
    assert (cdr["direction"], cdr["disposition"]) == ("inbound", "answered")
    assert cdr["callee"]["extension"] == "100"
    heard, _ = sf.read(phone.heard()[-1], dtype="int16")
    assert rms(heard) > 300  # SIPp's pcap reached the phone


def baresip_trunk(
    work_dir: Path, certificate: Path, seconds: float, commands: list[str] | None = None
) -> Baresip:
    """A trunk (number 300) that answers over TLS with `certificate`; it registers
    nowhere."""
    return Baresip(
        work_dir,
        account=account(TRUNK_NUMBER, None, HOST, 5060, register=False),
        certificate=certificate,
        time_limit_s=seconds,
        commands=commands or [],
    )


@pytest.mark.parametrize("trusted", [True, False], ids=["trunk-certificate-ok", "rogue"])
def test_callrec_calls_a_trunk_over_tls_and_checks_its_certificate(
    pki: Pki, tmp_path: Path, trusted: bool
) -> None:
    trunk = baresip_trunk(tmp_path / "trunk", pki.trunk if trusted else pki.rogue_trunk, 30)
    trunk.write_config()  # picks its port; the server needs it in [trunk] uri
    server = tls_server(
        tmp_path / "callrec", pki, trunk_uri=f"sip:{HOST}:{trunk.tls_port};transport=tls"
    ).server
    server.start()
    try:
        trunk.start()
        try:
            wait_until(lambda: "baresip is ready" in trunk.output(), timeout=10, what="trunk ready")
            result = server.run_sipp_phone(
                tmp_path / "phone",
                caller="100",
                password=PASSWORD,
                call_length_ms=3000,
                timeout_s=20,
            )
            if trusted:
                assert result.ok, result.summary() + server.log()[-3000:]
                trunk.wait_for(CALL_ESTABLISHED, timeout=5)
                cdr = server.wait_for_calls(1)[0]
                assert cdr["disposition"] == "answered"
            else:
                assert not result.ok
                assert "certificate verify failed" in server.log()
                assert re.search(INCOMING_CALL, trunk.output()) is None
                # The transport failure is a 503 at once (RFC 3261 §8.1.3.1), not a
                # 408 after Timer B's 32 s.
                cdr = server.wait_for_calls(1)[0]
                assert cdr["sip_status"] == 503, cdr
        finally:
            trunk.stop()
    finally:
        server.stop()
    if trusted:
        heard, _ = sf.read(trunk.heard()[-1], dtype="int16")
        assert rms(heard) > 300  # the phone's pcap reached the trunk over callrec's relay


def test_a_trusted_trunk_calls_in_over_tls(pki: Pki, tmp_path: Path) -> None:
    """The trunk's own TLS connections come from ports it picks: its host in `trusted`
    (over TLS only) makes its INVITE the trunk's, routed to user 100's phone (on UDP)."""
    trunk = baresip_trunk(tmp_path / "trunk", pki.trunk, 8)
    trunk.write_config()
    callrec = tls_server(
        tmp_path / "callrec",
        pki,
        trunk_uri=f"sip:{HOST}:{trunk.tls_port};transport=tls",
        trusted=HOST,
    )
    server = callrec.server
    trunk.commands = [f"/dial sip:100@{HOST}:{callrec.tls_port};transport=tls"]
    phone = Baresip(
        tmp_path / "phone",
        account=account("100", PASSWORD, HOST, server.sip_port),
        time_limit_s=20,
    )
    server.start()
    try:
        phone.start()
        phone.wait_for(registered_over("udp"), timeout=10)
        trunk.start()
        phone.wait_for(INCOMING_CALL, timeout=10)
        phone.wait_for(CALL_ESTABLISHED, timeout=10)
        trunk.wait()
        cdr = server.wait_for_calls(1)[0]
        assert (cdr["direction"], cdr["disposition"]) == ("inbound", "answered")
        assert cdr["callee"]["extension"] == "100"
    finally:
        trunk.stop()
        phone.stop()
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root")
def test_tshark_sees_no_sip_in_clear_on_the_tls_leg(
    callrec: TlsCallrec, pki: Pki, tmp_path: Path
) -> None:
    server, tls_port = callrec.server, callrec.tls_port
    capture = tmp_path / "lo.pcapng"
    ports = f"tcp port {tls_port} or udp port {server.trunk_port}"
    tshark = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", ports, "-w", str(capture)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tshark.stderr is not None
        started = ""
        while "Capturing on" not in started:  # tshark says so once the capture runs
            line = tshark.stderr.readline()
            assert line, f"tshark ended: {started}"
            started += line
        trunk = server.start_sipp_trunk(tmp_path / "uas", timeout_s=30)
        phone = tls_phone(callrec, pki, tmp_path, commands=[f"/dial {TRUNK_NUMBER}"], seconds=5)
        try:
            phone.start()
            phone.wait_for(CALL_ESTABLISHED, timeout=10)
            phone.wait()
        finally:
            phone.stop()
        assert trunk.wait().ok
    finally:
        os.kill(tshark.pid, signal.SIGINT)
        tshark.wait(timeout=10)

    def frames(display_filter: str, *fields: str) -> list[str]:
        command = ["tshark", "-r", str(capture), "-d", f"tcp.port=={tls_port},tls"]
        command += ["-Y", display_filter, "-T", "fields"]
        for name in fields:
            command += ["-e", name]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        return [line for line in out.stdout.splitlines() if line.strip()]

    tls_leg = f"tcp.port == {tls_port}"
    # Positive control: the UDP trunk leg of the same call carries SIP in clear text.
    assert len(frames(f"sip and udp.port == {server.trunk_port}", "frame.number")) >= 4
    assert frames(f"{tls_leg} and tls.handshake.type == 1", "frame.number")  # ClientHello
    assert len(frames(f"{tls_leg} and tls.app_data", "frame.number")) >= 4
    assert frames(f"{tls_leg} and sip", "frame.number") == []
    payload = b"".join(
        bytes.fromhex(hex_text.replace(":", ""))
        for hex_text in frames(f"{tls_leg} and tcp.len > 0", "tcp.payload")
    )
    assert len(payload) > 2000
    for clear_text in (b"SIP/2.0", b"REGISTER ", b"INVITE ", b"Digest ", b"m=audio"):
        assert clear_text not in payload


class TlsUa:
    """SIP by hand over one TLS connection to callrec (baresip 1.0 cannot register a
    sips: account): send a message, read the next one."""

    def __init__(self, callrec: TlsCallrec, pki: Pki, source_port: int = 0) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        raw = socket.create_connection(
            (HOST, callrec.tls_port), timeout=5, source_address=(HOST, source_port)
        )
        self.sock = context.wrap_socket(raw, server_hostname=HOST)
        self.port = self.sock.getsockname()[1]
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    def send(self, message: SipRequest | SipResponse) -> None:
        self.sock.sendall(message.to_bytes())

    def receive(self) -> SipRequest | SipResponse:
        while not self.pending:
            data = self.sock.recv(65535)
            assert data, "callrec closed the TLS connection"
            self.pending += self.framer.feed(data)
        message = parse_message(self.pending.pop(0))
        assert isinstance(message, SipRequest | SipResponse)
        return message

    def register(self, aor: str, contact: str, authorization: str | None = None) -> SipResponse:
        headers = Headers()
        for name, value in (
            ("Via", f"SIP/2.0/TLS {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag=reg"),
            ("To", f"<{aor}>"),
            ("Call-ID", "sips-registration"),
            ("CSeq", f"{2 if authorization else 1} REGISTER"),
            ("Contact", f"<{contact}>"),
            ("Content-Length", "0"),
        ):
            headers.add(name, value)
        if authorization is not None:
            headers.add("Authorization", authorization)
        self.send(SipRequest("REGISTER", aor.replace("100@", ""), headers))
        response = self.receive()
        assert isinstance(response, SipResponse)
        return response


def test_sips_uris_register_and_the_trunk_call_reaches_the_sips_contact(
    callrec: TlsCallrec, pki: Pki, tmp_path: Path
) -> None:
    ua = TlsUa(callrec, pki)
    aor = f"sips:100@{HOST}:{callrec.tls_port}"
    contact = f"sips:100@{HOST}:{ua.port}"
    try:
        challenge = ua.register(aor, contact)
        assert challenge.status == 401
        value = build_authorization(
            preferred_challenge(challenge.headers.get_all("WWW-Authenticate")),
            "REGISTER",
            aor.replace("100@", ""),
            "100",
            PASSWORD,
        )
        registered = ua.register(aor, contact, value)
        assert registered.status == 200, registered
        assert contact in (registered.headers.get("Contact") or "")

        trunk = start_sipp(
            "uac_busy.xml",
            work_dir=tmp_path / "trunk",
            remote=callrec.server.sip_address,
            local_port=callrec.server.trunk_port,
            media_port=free_port(even=True, span=4),
            callee="100",
            caller="555",
            timeout_s=20,
            ready_wait_s=0,
        )
        invite = ua.receive()
        assert isinstance(invite, SipRequest) and invite.method == "INVITE", invite
        assert invite.uri == contact  # over this connection, to the sips: contact
        via = invite.headers.get_all("Via")[0]
        assert via.startswith(f"SIP/2.0/TLS {HOST}:{callrec.tls_port};")
        assert f"@{HOST}:{callrec.tls_port};transport=tls>" in (invite.headers.get("Contact") or "")
        ua.send(make_response(invite, 486, to_tag="busy"))
        while not isinstance(ack := ua.receive(), SipRequest) or ack.method != "ACK":
            pass
        assert trunk.wait().ok
    finally:
        ua.sock.close()


def test_tls_from_the_udp_trunks_own_address_is_a_phone_and_is_challenged(
    callrec: TlsCallrec, pki: Pki
) -> None:
    """Trunk recognition counts the transport: the trunk is UDP, so an INVITE over TLS
    from its very address and port is a phone's (407), never routed as the trunk's."""
    ua = TlsUa(callrec, pki, source_port=callrec.server.trunk_port)
    try:
        headers = Headers()
        for name, value in (
            ("Via", f"SIP/2.0/TLS {HOST}:{ua.port};branch=z9hG4bK{uuid.uuid4().hex};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:555@{HOST}>;tag=spoof"),
            ("To", f"<sip:100@{HOST}>"),
            ("Call-ID", f"spoof-{uuid.uuid4().hex}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:555@{HOST}:{ua.port};transport=tls>"),
            ("Content-Length", "0"),
        ):
            headers.add(name, value)
        ua.send(SipRequest("INVITE", f"sip:100@{HOST}:{callrec.tls_port}", headers))
        answer = ua.receive()
        while isinstance(answer, SipResponse) and answer.status < 200:
            answer = ua.receive()
        assert isinstance(answer, SipResponse) and answer.status == 407, answer
    finally:
        ua.sock.close()
