"""One call's media as the SIP process sees it: a session in a media worker.

`RemoteMedia` is what `callrec.workers.pool.WorkerPool.open` returns: the `MediaLeg` the
SIP side (`b2bua`) relays through and the `RecordedMedia` the `RecordingManager`
records with. Every method only sends a command down the worker's channel, in order,
and never waits; the worker's answers and events come back through the pool. What the
SIP side must know at once, it knows here: the two ports (from the worker's answer to
`open`) and whether a remote address is usable (`media.relay.check_remote`, the very
check the worker's relay makes).

When the worker dies the pool calls `lost()`: commands are dropped from then on, and a
recording in progress comes back as a `lost` outcome for the manager to repair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from b2bua.sdes import MasterKey
from callrec.recording.control import RecordingOutcome, RecordingSpec, Toggle
from callrec.workers.protocol import Message, pack_bytes, pack_srtp_key
from media.relay import LEGS, check_remote
from media.rtp import MediaError

__all__ = ["RemoteMedia"]

DTMF_DURATION_MS = 160  # a `dtmf` event without a duration: an in-band key's length


class RemoteMedia:
    """A call's relay and recorder in worker `worker` (session id `sid`)."""

    def __init__(
        self,
        worker: int,
        sid: int,
        address: str,
        send: Callable[[Message], None],
        *,
        on_silence: Callable[[str], None],
        on_idle: Callable[[], None],
        on_closed: Callable[[RemoteMedia], None],
    ) -> None:
        self.worker = worker
        self.sid = sid
        self.address = address
        self.ports: tuple[int, int] = (0, 0)
        self.closed = False
        self.is_lost = False
        self._send = send
        self._on_silence = on_silence
        self._on_idle = on_idle
        self._on_closed = on_closed
        self._on_toggle: Callable[[Toggle], None] | None = None
        self._on_digit: Callable[[str, str, int], None] | None = None
        self._outcome: asyncio.Future[RecordingOutcome] | None = None

    def __repr__(self) -> str:
        return f"<RemoteMedia worker {self.worker} session {self.sid} ports {self.ports}>"

    @property
    def recording(self) -> bool:
        """True while a recording's outcome is awaited from the worker."""
        return self._outcome is not None and not self._outcome.done()

    def _command(self, op: str, **fields: Any) -> None:
        if not self.is_lost:
            self._send({"op": op, "sid": self.sid, **fields})

    # ------------------------------------------------------------------ MediaLeg
    def local_port(self, leg: str) -> int:
        if leg not in LEGS:
            raise MediaError(f"unknown leg {leg!r}, expected 'a' or 'b'")
        return self.ports[LEGS.index(leg)]

    def set_remote(
        self,
        leg: str,
        host: str,
        port: int,
        *,
        relatch: bool = False,
        signalled_from: str | None = None,
    ) -> None:
        if leg not in LEGS:
            raise MediaError(f"unknown leg {leg!r}, expected 'a' or 'b'")
        check_remote(self.address, host, port)
        self._command(
            "remote",
            leg=leg,
            host=host,
            port=port,
            relatch=relatch,
            signalled_from=signalled_from,
        )

    def set_crypto(self, leg: str, receive: MasterKey | None, send: MasterKey | None) -> None:
        """`leg` runs SRTP with these keys from now (both None: plain RTP). The keys go
        down the worker's local socket pair, never into a log."""
        if leg not in LEGS:
            raise MediaError(f"unknown leg {leg!r}, expected 'a' or 'b'")
        self._command(
            "srtp",
            leg=leg,
            receive=None if receive is None else pack_srtp_key(receive.suite, receive.material),
            send=None if send is None else pack_srtp_key(send.suite, send.material),
        )

    def mark_media_started(self) -> None:
        self._command("started")

    def close(self) -> None:
        """Close the relay (its ports go back to the worker's pool at once) and the
        recording, if any; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self._command("close", at=time.time())
        self._on_closed(self)

    # ------------------------------------------------------------------ RecordedMedia
    def start_recording(
        self,
        spec: RecordingSpec,
        sdp: dict[str, bytes],
        on_toggle: Callable[[Toggle], None],
        on_digit: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._on_toggle = on_toggle
        self._on_digit = on_digit
        self._outcome = asyncio.get_running_loop().create_future()
        if self.is_lost:
            self._outcome.set_result(RecordingOutcome(started=False, lost=True))
            return
        packed = {leg: pack_bytes(body) for leg, body in sdp.items()}
        self._command("record", spec=dataclasses.asdict(spec), sdp=packed)

    def learn_sdp(self, leg: str, body: bytes) -> None:
        self._command("sdp", leg=leg, body=pack_bytes(body))

    def info(self, content_type: str, body: bytes, at: float) -> None:
        self._command("info", content_type=content_type, body=pack_bytes(body), at=at)

    def stop_recording(self, at: float) -> Awaitable[RecordingOutcome]:
        if self._outcome is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(RecordingOutcome(started=False))
            return done
        if not self._outcome.done():
            self._command("stop_recording", at=at)
        return self._outcome

    # ------------------------------------------------------------------ from the worker
    def on_event(self, message: Message) -> None:
        """An event the worker sent about this session."""
        event = message.get("ev")
        if event == "silence":
            self._on_silence(str(message["leg"]))
        elif event == "idle":
            self._on_idle()
        elif event == "toggle" and self._on_toggle is not None:
            self._on_toggle(
                Toggle(
                    action=str(message["action"]),
                    method=str(message["method"]),
                    at=float(message["at"]),
                    first_start=bool(message["first_start"]),
                )
            )
        elif event == "dtmf" and self._on_digit is not None:
            # A key for a far end without telephone-event, to send as SIP INFO.
            self._on_digit(
                str(message["leg"]),
                str(message["digit"]),
                int(message.get("duration") or DTMF_DURATION_MS),
            )
        elif event == "recorded" and self._outcome is not None and not self._outcome.done():
            fields = dict(message["outcome"])
            fields["segments"] = [(float(a), float(b)) for a, b in fields.get("segments", [])]
            self._outcome.set_result(RecordingOutcome(**fields))

    def lost(self) -> None:
        """The worker died: drop further commands; a recording comes back as `lost`."""
        self.is_lost = True
        self.closed = True
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(RecordingOutcome(started=True, lost=True))
