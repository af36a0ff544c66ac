"""`callrec phone`: a pjsua2 softphone for testers, tests and benches.

Two modes::

    callrec phone dial TARGET --via HOST:PORT --as USER [--password P] [--transport udp|tcp|tls]
        [--play FILE.wav] [--record-heard OUT.wav] [--digits "*1" [--dtmf-method
        rfc2833|inband|info] --at SECONDS [--at SECONDS ...]] [--hold-at S --resume-at S]
        [--hangup-after S | --cancel-after S] [--expect-status CODE] [--local-port N]
        [--timeout S]
    callrec phone answer [--register] --via HOST:PORT --as USER [--password P]
        [--play FILE.wav] [--record-heard OUT.wav] [--answer-after S] [--calls N]
        [--busy] [--hangup-after S] [--local-port N] [--timeout S]

Every mode ends on its own (``--timeout``, default 60 s). Standard output carries one JSON
object per line, e.g. ``{"event": "confirmed", "call": 0, "t": 0.41}``; the events are
``started`` (with ``sip_port``), ``registered``/``registration_failed``/``unregistered``,
``incoming``, ``calling``, ``progress`` (1xx, with ``status``), ``confirmed``, ``media``
(``state``: active, hold, remote_hold, none; ``codec``, ``local_rtp``, ``remote_rtp``,
``event_pt``: the telephone-event payload type, 120 by pjsua's default), ``recording``,
``dtmf_sent`` (``digit``, ``after_answer_s``), ``dtmf_received`` (``digit``, ``method``),
``hold_sent``, ``resume_sent``,
``disconnected`` (``status``, ``reason``, ``duration_s``), ``error`` and, last, ``done``
(``ok``, ``exit``). The exit code is 0 when the calls went as asked: for ``dial``, the
call was answered (or ended with ``--expect-status``) and every scheduled action ran;
for ``answer``, ``--calls`` calls were answered (or refused with 486 under ``--busy``)
and ended.

Times (``--at``, ``--hold-at``, ``--resume-at``, ``--hangup-after``) count from the
answer (``confirmed``); ``--cancel-after`` counts from the INVITE. ``--digits`` are
keyed one at a time, 250 ms apart, from each ``--at``. In-band digits are 100 ms tones
mixed into the audio the phone sends.

A TARGET that is a full ``sip:`` URI is still sent through ``--via`` (with a Route
header); a plain user becomes ``sip:USER@VIA``. G.711 (PCMU, PCMA) is offered, at 8 kHz,
without VAD, so a call sends 50 RTP packets per second even in silence; ``--codec``
chooses the preferred one, and ``--codec g722`` offers G.722 first (then G.711) and runs
the phone at 16 kHz (the wheel has no Opus). ``--record-heard`` writes mono 16-bit WAV at
that rate (``OUT.wav``, then ``OUT-2.wav``... for further calls).
``--srtp optional|mandatory`` (both modes) uses SRTP with SDES keys in the SDP, over
plain SIP: RTP/AVP with ``a=crypto`` (optional) or RTP/SAVP (mandatory).

The entry point is :func:`run_phone` (``callrec.cli`` calls ``run_phone(argv)`` for
``callrec phone ...``; ``python -m callrec_phone.phone ...`` is the same). pjsua2 allows one
Endpoint per process and four calls per Endpoint, so run each phone in its own process:
:class:`PhoneProcess` does that and collects the events.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTMF_METHODS = ("rfc2833", "inband", "info")
DEFAULT_TIMEOUT_S = 60.0
# pjsua2's limit per Endpoint (design.md): more calls fail with PJ_ETOOMANY.
MAX_CALLS_PER_ENDPOINT = 4
POLL_MS = 10
INBAND_TONE_ON_MS = 100
INBAND_TONE_OFF_MS = 100
# Between the starts of two keyed digits (rfc2833 digits last 160 ms in pjsua).
DIGIT_INTERVAL_S = 0.25
SIP_REQUEST_TERMINATED = 487
# What --codec may prefer: the pjsua2 wheel has G.722 (16 kHz) but no Opus.
CODECS = ("pcmu", "pcma", "g722")
_CODEC_IDS = {"pcmu": "PCMU/8000", "pcma": "PCMA/8000", "g722": "G722/16000"}
SRTP_USES = ("off", "optional", "mandatory")


class PhoneError(Exception):
    """A phone could not be set up (bad option, pjsua2 refused a setting)."""


@dataclass
class PhoneOptions:
    """Everything `callrec phone` was asked to do, for one process."""

    mode: str  # "dial" | "answer"
    via: str  # HOST:PORT of the proxy / registrar (or the other phone)
    user: str
    password: str | None = None
    target: str | None = None
    transport: str = "udp"
    local_port: int = 0
    rtp_port: int = 0
    play: Path | None = None
    record_heard: Path | None = None
    digits: str | None = None
    dtmf_method: str = "rfc2833"
    digits_at: list[float] = field(default_factory=list)
    hold_at: float | None = None
    resume_at: float | None = None
    hangup_after: float | None = None
    cancel_after: float | None = None
    expect_status: int | None = None
    register: bool = False
    answer_after: float = 0.0
    calls: int = 1
    busy: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    codec: str = "pcmu"
    srtp: str = "off"  # SDES SRTP over plain SIP: off | optional | mandatory
    tls_ca: Path | None = None  # --transport tls: the CA the server's certificate is checked with
    log_level: int = 0

    @property
    def via_host(self) -> str:
        """Host part of ``--via``."""
        return split_host_port(self.via)[0]

    @property
    def via_port(self) -> int:
        """Port part of ``--via`` (5060 if absent)."""
        return split_host_port(self.via)[1]

    def uri(self, user: str | None) -> str:
        """``sip:user@via`` (``user`` None: the proxy itself), with the transport."""
        host, port = split_host_port(self.via)
        user_part = f"{user}@" if user else ""
        suffix = f";transport={self.transport}" if self.transport != "udp" else ""
        return f"sip:{user_part}{host}:{port}{suffix}"

    def target_uri(self) -> str:
        """The Request-URI to dial: TARGET as given if it is a URI, else TARGET@via."""
        if self.target is None:
            raise PhoneError("dial needs a TARGET")
        if self.target.startswith(("sip:", "sips:")):
            return self.target
        return self.uri(self.target)


def split_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5060"`` -> ("127.0.0.1", 5060); ``"[::1]:5060"`` for IPv6."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        return host, int(port) if port else 5060
    except ValueError as error:
        raise PhoneError(f"--via {text!r}: expected HOST:PORT") from error


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `callrec phone`."""
    parser = argparse.ArgumentParser(
        prog="callrec phone", description="A pjsua2 softphone for testing callrec."
    )
    modes = parser.add_subparsers(dest="mode", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--via", required=True, help="HOST:PORT of callrec (or a peer)")
        sub.add_argument("--as", dest="user", required=True, help="our user name")
        sub.add_argument("--password", help="digest password (answers 401/407)")
        sub.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
        sub.add_argument("--tls-ca", type=Path, help="CA file the TLS server is verified with")
        sub.add_argument("--local-port", type=int, default=0, help="SIP port (0: any)")
        sub.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: any)")
        sub.add_argument("--play", type=Path, help="WAV looped into the call")
        sub.add_argument("--record-heard", type=Path, help="WAV of what the phone hears")
        sub.add_argument("--hangup-after", type=float, help="hang up S seconds after answer")
        sub.add_argument("--timeout", dest="timeout_s", type=float, default=DEFAULT_TIMEOUT_S)
        sub.add_argument("--codec", choices=CODECS, default="pcmu")
        sub.add_argument(
            "--srtp",
            choices=SRTP_USES,
            default="off",
            help="SRTP with SDES keys (RTP/AVP + crypto when optional, RTP/SAVP when mandatory)",
        )
        sub.add_argument("--log-level", type=int, default=0, help="pjsip log level to stderr")

    dial = modes.add_parser("dial", help="place one call")
    dial.add_argument("target", help="user to call (or a full sip: URI)")
    common(dial)
    dial.add_argument("--digits", help='DTMF digits to send, e.g. "*1"')
    dial.add_argument("--dtmf-method", choices=DTMF_METHODS, default="rfc2833")
    dial.add_argument(
        "--at",
        dest="digits_at",
        type=float,
        action="append",
        default=[],
        help="send --digits S seconds after the answer (repeatable; default 1.0)",
    )
    dial.add_argument("--hold-at", type=float, help="re-INVITE a=sendonly at S")
    dial.add_argument("--resume-at", type=float, help="re-INVITE a=sendrecv at S")
    dial.add_argument("--cancel-after", type=float, help="CANCEL S seconds after INVITE")
    dial.add_argument("--expect-status", type=int, help="final status that counts as success")

    answer = modes.add_parser("answer", help="wait for calls and answer them")
    common(answer)
    answer.add_argument("--register", action="store_true", help="REGISTER at --via first")
    answer.add_argument("--answer-after", type=float, default=0.0, help="ring S seconds")
    answer.add_argument("--calls", type=int, default=1, help="calls to take, then exit")
    answer.add_argument("--busy", action="store_true", help="answer 486 Busy Here")
    return parser


def parse_options(argv: Sequence[str]) -> PhoneOptions:
    """PhoneOptions from the command line (raises SystemExit on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    values: dict[str, Any] = vars(args)
    options = PhoneOptions(**{k: v for k, v in values.items() if v is not None})
    if options.mode == "dial":
        if options.digits and not options.digits_at:
            options.digits_at = [1.0]
        if options.resume_at is not None and options.hold_at is None:
            parser.error("--resume-at needs --hold-at")
        if options.cancel_after is not None and options.expect_status is None:
            options.expect_status = SIP_REQUEST_TERMINATED
    if options.calls < 1 or options.calls > MAX_CALLS_PER_ENDPOINT * 100:
        parser.error("--calls must be at least 1")
    return options


class EventPrinter:
    """Writes the phone's status lines (JSON) with the time since start."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.started = time.monotonic()
        self.history: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": round(time.monotonic() - self.started, 3), **fields}
        self.history.append(record)
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


@dataclass
class ScheduledAction:
    """Something to do at a time after a call's answer (or INVITE)."""

    due: float  # monotonic seconds
    name: str
    run: Callable[[], None]
    done: bool = False


def run_phone(argv: Sequence[str]) -> int:
    """Run `callrec phone ARGV...`; returns the exit code (0: calls went as asked)."""
    options = parse_options(argv)
    emit = EventPrinter()
    try:
        phone = Softphone(options, emit)
    except PhoneError as error:
        emit("error", message=str(error))
        emit("done", ok=False, exit=2)
        return 2
    try:
        code = phone.run()
    finally:
        phone.close()
    emit("done", ok=code == 0, exit=code)
    return code


class Softphone:
    """One pjsua2 Endpoint with one account, driven from a polling loop.

    The endpoint runs without worker threads (``threadCnt=0``, ``mainThreadOnly``):
    every pjsua2 callback happens inside ``libHandleEvents`` on this thread, so the
    callbacks only record what happened and the loop acts on it.
    """

    def __init__(self, options: PhoneOptions, emit: EventPrinter) -> None:
        import pjsua2 as pj  # imported here so `--help` works without the wheel

        self.pj: Any = pj
        self.options = options
        self.emit = emit
        self.calls: list[PhoneCall] = []
        self.finished: list[PhoneCall] = []
        self.failures: list[str] = []
        self.registered = False
        self.registration_failed = False
        self.deadline = time.monotonic() + options.timeout_s
        self.endpoint: Any = pj.Endpoint()
        self.all_calls: list[PhoneCall] = []
        with _stdout_to_stderr():
            # pjlib logs its start-up to fd 1 before any log configuration applies.
            self.endpoint.libCreate()
        try:
            self._configure()
        except pj.Error as error:
            raise PhoneError(f"pjsua2: {error.info()}") from error

    def _configure(self) -> None:
        pj = self.pj
        options = self.options
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.maxCalls = MAX_CALLS_PER_ENDPOINT
        config.uaConfig.userAgent = "callrec-phone"
        config.logConfig.level = options.log_level
        config.logConfig.consoleLevel = options.log_level
        self._log_writer = _stderr_log_writer(pj)
        config.logConfig.writer = self._log_writer
        # G.722 is wideband: the bridge (player, recorder) runs at 16 kHz then.
        rate = 16000 if options.codec == "g722" else 8000
        config.medConfig.clockRate = rate
        config.medConfig.sndClockRate = rate
        config.medConfig.channelCount = 1
        # Silence must still be sent: relays and counters expect a steady packet flow.
        config.medConfig.noVad = True
        config.medConfig.ecTailLen = 0
        self.endpoint.libInit(config)
        transport_config = pj.TransportConfig()
        transport_config.port = options.local_port
        transport_config.boundAddress = _bind_address(options.via_host)
        kind = {
            "udp": pj.PJSIP_TRANSPORT_UDP,
            "tcp": pj.PJSIP_TRANSPORT_TCP,
            "tls": pj.PJSIP_TRANSPORT_TLS,
        }[options.transport]
        if options.transport == "tls":
            # A client: the server's certificate must chain to --tls-ca.
            transport_config.tlsConfig.CaListFile = str(options.tls_ca or "")
            transport_config.tlsConfig.verifyServer = True
        self.transport_id = self.endpoint.transportCreate(kind, transport_config)
        self.endpoint.libStart()
        self.endpoint.audDevManager().setNullDev()
        preferred = _CODEC_IDS[options.codec]
        for codec in self.endpoint.codecEnum2():
            name = codec.codecId
            if name.startswith(preferred):
                priority = 255
            elif name.startswith(("PCMU/8000", "PCMA/8000")):
                priority = 254
            else:
                priority = 0  # the preferred codec, then G.711 only
            self.endpoint.codecSetPriority(name, priority)
        info = self.endpoint.transportGetInfo(self.transport_id)
        self.sip_port = int(info.localName.rsplit(":", 1)[1])
        self.account = PhoneAccount(self)
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:{options.user}@{options.via_host}"
        account_config.sipConfig.transportId = self.transport_id
        account_config.mediaConfig.transportConfig.port = options.rtp_port
        account_config.mediaConfig.transportConfig.boundAddress = _bind_address(options.via_host)
        account_config.mediaConfig.srtpUse = {
            "off": pj.PJMEDIA_SRTP_DISABLED,
            "optional": pj.PJMEDIA_SRTP_OPTIONAL,
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
        }[options.srtp]
        # SDES keys in SDP over plain UDP/TCP SIP (tests); no DTLS-SRTP.
        account_config.mediaConfig.srtpSecureSignaling = 0
        account_config.mediaConfig.srtpOpt.keyings.clear()
        account_config.mediaConfig.srtpOpt.keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        if options.password is not None:
            credential = pj.AuthCredInfo("digest", "*", options.user, 0, options.password)
            account_config.sipConfig.authCreds.append(credential)
        if options.mode == "answer" and options.register:
            account_config.regConfig.registrarUri = options.uri(None)
            account_config.regConfig.registerOnAdd = True
            account_config.regConfig.timeoutSec = 300
            account_config.regConfig.retryIntervalSec = 0
        else:
            account_config.regConfig.registerOnAdd = False
        if options.mode == "dial" and options.target and options.target.startswith("sip"):
            # A full target URI still goes through --via (as a loose-routing Route).
            account_config.sipConfig.proxies.append(options.uri(None) + ";lr")
        self.account_config = account_config

    def run(self) -> int:
        """Run the asked mode to its end; the exit code."""
        options = self.options
        self.account.create(self.account_config)
        self.emit(
            "started",
            mode=options.mode,
            sip_port=self.sip_port,
            transport=options.transport,
            user=options.user,
        )
        if options.mode == "dial":
            return self._run_dial()
        return self._run_answer()

    def _run_dial(self) -> int:
        pj = self.pj
        options = self.options
        call = PhoneCall(self, self.account, pj.PJSUA_INVALID_ID)
        parameters = pj.CallOpParam(True)
        self.emit("calling", target=options.target_uri())
        # Listed before makeCall: pjsua2 may report the call's end from inside it.
        self.calls.append(call)
        try:
            call.make_call(options.target_uri(), parameters)
        except pj.Error as error:
            self.calls.remove(call)
            self.emit("error", message=f"makeCall: {error.info()}")
            return 1
        if options.cancel_after is not None:
            call.schedule(options.cancel_after, "cancel", call.hang_up)
        self._loop(lambda: bool(self.finished) and not self.calls)
        if not self.finished:
            self.failures.append(f"no final state within --timeout {options.timeout_s:g}s")
            for live in list(self.calls):
                live.hang_up()
            self._loop(lambda: not self.calls, extra_s=2.0)
            return 1
        outcome = self.finished[0]
        if options.expect_status is not None:
            if outcome.final_status != options.expect_status:
                self.emit(
                    "error",
                    message=f"expected status {options.expect_status}, got {outcome.final_status}",
                )
                return 1
            return 0 if not outcome.failures else 1
        if not outcome.confirmed:
            self.emit("error", message=f"call not answered: {outcome.final_status}")
            return 1
        if outcome.failures:
            self.emit("error", message="; ".join(outcome.failures))
            return 1
        return 0

    def _run_answer(self) -> int:
        options = self.options
        if options.register:
            self._loop(lambda: self.registered or self.registration_failed)
            if not self.registered:
                return 1
        self._loop(lambda: len(self._taken_calls()) >= options.calls and not self.calls)
        ok_calls = [call for call in self.finished if call.went_as_asked()]
        if len(ok_calls) < options.calls:
            self.emit(
                "error",
                message=f"{len(ok_calls)} of {options.calls} calls went as asked "
                f"({len(self.finished)} ended)",
            )
            for live in list(self.calls):
                live.hang_up()
            self._loop(lambda: not self.calls, extra_s=2.0)
            return 1
        return 0

    def _taken_calls(self) -> list[PhoneCall]:
        return [call for call in self.finished if not call.unexpected]

    def incoming_call(self, call_id: int) -> None:
        """An INVITE arrived: ring, then answer or refuse as the options say."""
        options = self.options
        call = PhoneCall(self, self.account, call_id)
        call.incoming = True
        taken = len(self._taken_calls()) + len(self.calls)
        self.calls.append(call)
        info = call.get_info()
        self.emit(
            "incoming",
            call=call.call_id,
            remote=info.remoteUri,
            local=info.localUri,
            call_id=info.callIdString,
        )
        if taken >= options.calls:
            call.unexpected = True  # more calls than --calls: refuse, fail the run
            call.respond(486, "Busy Here")
        elif options.busy:
            call.respond(486, "Busy Here")
        else:
            call.respond(180, "Ringing")
            call.schedule_from_now(options.answer_after, "answer", lambda: call.respond(200, "OK"))

    def _loop(self, until: Callable[[], bool], extra_s: float = 0.0) -> None:
        """Poll pjsua2 and run due actions until ``until()`` or the deadline."""
        deadline = self.deadline + extra_s
        while time.monotonic() < deadline:
            self.endpoint.libHandleEvents(POLL_MS)
            now = time.monotonic()
            for call in list(self.calls):
                call.run_due(now)
            if until():
                return

    def call_ended(self, call: PhoneCall) -> None:
        """A call reached DISCONNECTED: keep its outcome, forget the pjsua2 object."""
        if call in self.calls:
            self.calls.remove(call)
        self.finished.append(call)

    def close(self) -> None:
        """Hang up what is left and destroy the endpoint."""
        for call in list(self.calls):
            call.hang_up()
        if self.calls:
            # Give the BYEs a moment to leave.
            end = time.monotonic() + 1.0
            while self.calls and time.monotonic() < end:
                self.endpoint.libHandleEvents(POLL_MS)
        try:
            if self.options.mode == "answer" and self.options.register and self.registered:
                self.account.set_registration(False)
                end = time.monotonic() + 1.0
                while time.monotonic() < end and self.registered:
                    self.endpoint.libHandleEvents(POLL_MS)
        except self.pj.Error:
            pass
        self.calls.clear()
        self.finished.clear()
        # pjsua2 objects must go before libDestroy: a Call destroyed after it trips an
        # assertion in pjsua_call_set_user_data and aborts the process. PhoneCall and
        # its pjsua2 Call reference each other, so break the cycle by hand.
        for call in self.all_calls:
            call.release()
        self.all_calls.clear()
        self.account.shutdown()
        gc.collect()
        self.endpoint.libDestroy()


def _bind_address(via_host: str) -> str:
    """Bind the phone's sockets to loopback when it talks to a loopback peer."""
    if via_host.startswith("127.") or via_host in ("localhost", "::1", "[::1]"):
        return "127.0.0.1" if not via_host.endswith("::1") and via_host != "[::1]" else "::1"
    return ""


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr for a while (C code that prints)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _stderr_log_writer(pj: Any) -> Any:
    """A pjsua2 LogWriter to stderr, so that stdout carries only the JSON events."""

    class _Writer(pj.LogWriter):  # type: ignore[misc]
        def write(self, entry: Any) -> None:
            sys.stderr.write(entry.msg if entry.msg.endswith("\n") else entry.msg + "\n")

    return _Writer()


class PhoneAccount:
    """The pjsua2 Account: registration state and incoming calls."""

    def __init__(self, phone: Softphone) -> None:
        pj = phone.pj

        class _Account(pj.Account):  # type: ignore[misc,name-defined]
            def onRegState(self, prm: Any) -> None:
                phone_ = phone
                info = self.getInfo()
                if prm.code // 100 == 2 and info.regIsActive:
                    if not phone_.registered:
                        phone_.registered = True
                        phone_.emit("registered", status=prm.code, expires=info.regExpiresSec)
                elif prm.code // 100 == 2:
                    phone_.registered = False
                    phone_.emit("unregistered", status=prm.code)
                else:
                    phone_.registration_failed = True
                    phone_.emit("registration_failed", status=prm.code, reason=prm.reason)

            def onIncomingCall(self, prm: Any) -> None:
                phone.incoming_call(prm.callId)

        self._account = _Account()

    def create(self, config: Any) -> None:
        """Add the account to the endpoint (registers if so configured)."""
        self._account.create(config)

    def set_registration(self, renew: bool) -> None:
        """REGISTER (renew) or un-REGISTER (expires 0)."""
        self._account.setRegistration(renew)

    def shutdown(self) -> None:
        """Delete the account before the endpoint goes."""
        self._account.shutdown()

    @property
    def native(self) -> Any:
        """The pjsua2 Account object (for Call constructors)."""
        return self._account


class PhoneCall:
    """One call and what it should do, as seen by the phone loop."""

    def __init__(self, phone: Softphone, account: PhoneAccount, call_id: int) -> None:
        pj = phone.pj
        owner = self

        class _Call(pj.Call):  # type: ignore[misc,name-defined]
            def onCallState(self, prm: Any) -> None:
                owner.on_state()

            def onCallMediaState(self, prm: Any) -> None:
                owner.on_media()

            def onDtmfDigit(self, prm: Any) -> None:
                owner.on_dtmf(prm.digit, prm.method, prm.duration)

        self.phone = phone
        self.pj = pj
        self.native: Any = _Call(account.native, call_id)
        self.call_id: int = call_id
        self.incoming = False
        self.unexpected = False
        self.confirmed = False
        self.confirmed_at: float | None = None
        self.started_at = time.monotonic()
        self.final_status: int | None = None
        self.last_status: int | None = None
        self.failures: list[str] = []
        self.actions: list[ScheduledAction] = []
        self.media_connected = False
        self.tone_generator: Any = None
        self.recorder: Any = None
        self.player: Any = None
        self.hangup_requested = False
        phone.all_calls.append(self)

    def release(self) -> None:
        """Drop the pjsua2 objects (before the endpoint is destroyed)."""
        self._stop_media()
        self.actions.clear()
        self.native = None

    # pjsua2 delegation
    def get_id(self) -> int:
        """pjsua call id."""
        return int(self.native.getId())

    def get_info(self) -> Any:
        """pjsua2 CallInfo."""
        return self.native.getInfo()

    def make_call(self, uri: str, parameters: Any) -> None:
        """Send the INVITE."""
        self.native.makeCall(uri, parameters)
        self.call_id = self.get_id()
        self.started_at = time.monotonic()

    # scheduling
    def schedule(self, after_s: float, name: str, run: Callable[[], None]) -> None:
        """Run ``run`` ``after_s`` seconds after the call started (INVITE sent/received)."""
        self.actions.append(ScheduledAction(self.started_at + after_s, name, run))

    def schedule_from_now(self, after_s: float, name: str, run: Callable[[], None]) -> None:
        """Run ``run`` ``after_s`` seconds from now."""
        self.actions.append(ScheduledAction(time.monotonic() + after_s, name, run))

    def run_due(self, now: float) -> None:
        """Run the actions whose time has come."""
        for action in self.actions:
            if not action.done and action.due <= now:
                action.done = True
                try:
                    action.run()
                except self.pj.Error as error:
                    self.failures.append(f"{action.name}: {error.info()}")
                    self.phone.emit("error", call=self.call_id, message=self.failures[-1])

    def went_as_asked(self) -> bool:
        """For `answer`: the call was answered (or refused busy, if asked) and ended."""
        if self.unexpected or self.failures:
            return False
        if self.phone.options.busy:
            return self.final_status == 486
        return self.confirmed

    # callbacks (inside libHandleEvents)
    def on_state(self) -> None:
        pj = self.pj
        info = self.native.getInfo()
        self.call_id = int(info.id)
        self.last_status = int(info.lastStatusCode)
        state = info.state
        if state in (pj.PJSIP_INV_STATE_EARLY, pj.PJSIP_INV_STATE_CALLING) and not self.incoming:
            if self.last_status and 100 < self.last_status < 200:
                self.phone.emit("progress", call=self.call_id, status=self.last_status)
        elif state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self.confirmed_at = time.monotonic()
            self.phone.emit("confirmed", call=self.call_id, remote=info.remoteUri)
            self._schedule_in_call_actions()
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.final_status = self.last_status
            # A peer may end the call before our own hang-up; other actions must have run.
            pending = [
                a.name for a in self.actions if not a.done and a.name not in ("hangup", "cancel")
            ]
            self.actions.clear()
            self._stop_media()
            self.phone.emit(
                "disconnected",
                call=self.call_id,
                status=self.final_status,
                reason=info.lastReason,
                duration_s=round(info.connectDuration.sec + info.connectDuration.msec / 1000, 3),
                confirmed=self.confirmed,
            )
            if pending:
                self.failures.append(f"call ended before: {', '.join(pending)}")
            self.phone.call_ended(self)

    def _schedule_in_call_actions(self) -> None:
        options = self.phone.options
        base = self.confirmed_at or time.monotonic()

        def at(seconds: float, name: str, run: Callable[[], None]) -> None:
            self.actions.append(ScheduledAction(base + seconds, name, run))

        if self.incoming:
            if options.hangup_after is not None:
                at(options.hangup_after, "hangup", self.hang_up)
            return
        self.actions = [a for a in self.actions if a.name != "cancel"]
        if options.digits:
            # Keyed one at a time, like a person: each digit's time is then known.
            for seconds in options.digits_at:
                for index, digit in enumerate(options.digits):
                    due = seconds + index * DIGIT_INTERVAL_S
                    at(due, f"digit {digit}@{due:g}", functools.partial(self.send_digit, digit))
        if options.hold_at is not None:
            at(options.hold_at, "hold", self.hold)
        if options.resume_at is not None:
            at(options.resume_at, "resume", self.resume)
        if options.hangup_after is not None:
            at(options.hangup_after, "hangup", self.hang_up)

    def on_media(self) -> None:
        pj = self.pj
        info = self.native.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            state = {
                pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "hold",
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
                pj.PJSUA_CALL_MEDIA_NONE: "none",
                pj.PJSUA_CALL_MEDIA_ERROR: "error",
            }.get(media.status, str(media.status))
            self.phone.emit("media", call=self.call_id, state=state, **self._media_details(media))
            if media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self._connect_media(media.index)

    def _media_details(self, media: Any) -> dict[str, Any]:
        """Codec and RTP addresses of the stream, for tests that count packets."""
        try:
            transport = self.native.getMedTransportInfo(media.index)
            stream = self.native.getStreamInfo(media.index)
        except self.pj.Error:
            return {}
        return {
            "codec": stream.codecName,
            "local_rtp": transport.localRtpName,
            "remote_rtp": stream.remoteRtpAddress,
            "event_pt": stream.audTxEventPt,
        }

    def on_dtmf(self, digit: str, method: int, duration: int) -> None:
        pj = self.pj
        name = "info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc2833"
        # pjsua reports an unknown duration (SIP INFO without one, RFC 2833 at the
        # event's start) as (unsigned) -1.
        known = duration if 0 <= duration < 0xFFFF_FFFF else None
        self.phone.emit(
            "dtmf_received", call=self.call_id, digit=digit, method=name, duration_ms=known
        )

    # media
    def _connect_media(self, index: int) -> None:
        pj = self.pj
        options = self.phone.options
        audio = self.native.getAudioMedia(index)
        if self.media_connected:
            return  # the conference ports stay connected across re-INVITEs
        self.media_connected = True
        if options.play is not None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(str(options.play), 0)  # 0: loop
            self.player.startTransmit(audio)
        if options.record_heard is not None:
            path = _record_path(options.record_heard, len(self.phone.finished))
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(str(path))
            audio.startTransmit(self.recorder)
            self.phone.emit("recording", call=self.call_id, path=str(path))
        if options.mode == "dial" and options.dtmf_method == "inband" and options.digits:
            self.tone_generator = pj.ToneGenerator()
            self.tone_generator.createToneGenerator(8000, 1)
            self.tone_generator.startTransmit(audio)

    def _stop_media(self) -> None:
        # Dropping the references closes the recorder's WAV and frees the ports.
        self.player = None
        self.recorder = None
        if self.tone_generator is not None:
            self.tone_generator.stop()
        self.tone_generator = None

    # actions
    def respond(self, status: int, reason: str) -> None:
        """Answer an incoming call with ``status`` (180, 200, 486...)."""
        parameters = self.pj.CallOpParam(True)
        parameters.statusCode = status
        parameters.reason = reason
        if status >= 300:
            self.native.hangup(parameters)
        else:
            self.native.answer(parameters)

    def hang_up(self) -> None:
        """BYE if answered, CANCEL if ringing (outgoing), 603 if ringing (incoming)."""
        if self.hangup_requested:
            return
        self.hangup_requested = True
        parameters = self.pj.CallOpParam(True)
        if self.incoming and not self.confirmed:
            parameters.statusCode = 603
        self.native.hangup(parameters)

    def send_digit(self, digit: str) -> None:
        """Key one digit by ``--dtmf-method``; ``dtmf_sent`` says when (from the answer)."""
        pj = self.pj
        options = self.phone.options
        if options.dtmf_method == "inband":
            if self.tone_generator is None:
                raise PhoneError("no media yet for in-band digits")
            tones = pj.ToneDigitVector()
            tone = pj.ToneDigit()
            tone.digit = digit
            tone.on_msec = INBAND_TONE_ON_MS
            tone.off_msec = INBAND_TONE_OFF_MS
            tone.volume = 0  # pjmedia default amplitude (about -10 dBm0 per tone)
            tones.append(tone)
            self.tone_generator.playDigits(tones)
        else:
            parameters = pj.CallSendDtmfParam()
            parameters.digits = digit
            parameters.method = (
                pj.PJSUA_DTMF_METHOD_SIP_INFO
                if options.dtmf_method == "info"
                else pj.PJSUA_DTMF_METHOD_RFC2833
            )
            self.native.sendDtmf(parameters)
        after_answer = time.monotonic() - (self.confirmed_at or time.monotonic())
        self.phone.emit(
            "dtmf_sent",
            call=self.call_id,
            digit=digit,
            method=options.dtmf_method,
            after_answer_s=round(after_answer, 3),
        )

    def hold(self) -> None:
        """re-INVITE with a=sendonly."""
        self.native.setHold(self.pj.CallOpParam(True))
        self.phone.emit("hold_sent", call=self.call_id)

    def resume(self) -> None:
        """re-INVITE with a=sendrecv."""
        parameters = self.pj.CallOpParam(True)
        parameters.opt.flag = self.pj.PJSUA_CALL_UNHOLD
        self.native.reinvite(parameters)
        self.phone.emit("resume_sent", call=self.call_id)


def _record_path(path: Path, index: int) -> Path:
    """OUT.wav for the first call, OUT-2.wav for the second..."""
    if index == 0:
        return path
    return path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


@dataclass
class PhoneResult:
    """How a phone process ended: its exit code and every JSON event it printed."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def named(self, event: str) -> list[dict[str, Any]]:
        """The events called ``event``, in order."""
        return [record for record in self.events if record.get("event") == event]


class PhoneProcess:
    """A `callrec phone` in a child process (one pjsua2 Endpoint per process).

    ``PhoneProcess(["answer", "--via", "127.0.0.1:5060", "--as", "201"])`` starts it;
    ``wait_for("started")`` blocks until that event is printed and returns it;
    ``wait()`` returns a :class:`PhoneResult`. The child is killed by PID at the end of
    ``wait``'s timeout if it has not ended by then.
    """

    def __init__(self, argv: Sequence[str], *, command: Sequence[str] | None = None) -> None:
        import subprocess
        import tempfile
        import threading

        base = list(command) if command else [sys.executable, "-m", "callrec_phone.phone"]
        self.argv = [*base, *argv]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - read back in wait()
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL
        )
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not one of ours (a library printing on stdout)
            with self._changed:
                self.events.append(record)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, event: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The first ``event`` printed; raises TimeoutError (or if the phone exited)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for record in self.events:
                    if record.get("event") == event:
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise TimeoutError(f"phone printed no {event!r}: {self.events}")
                self._changed.wait(remaining)

    def wait(self, timeout_s: float = 60.0) -> PhoneResult:
        """Wait for the phone to exit (killing it after ``timeout_s``)."""
        import subprocess

        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        return PhoneResult(self.process.returncode, list(self.events), stderr)

    def kill(self) -> None:
        """Kill the child (by its PID) if it still runs."""
        if self.process.poll() is None:
            self.process.kill()


def main() -> None:
    """`python -m callrec_phone.phone ...` (the same as `callrec phone ...`)."""
    raise SystemExit(run_phone(sys.argv[1:]))


if __name__ == "__main__":
    main()
