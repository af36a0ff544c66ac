"""A notice check's call: user 202 (password pw-202) calls the trunk through `callrec
serve` with pjsua2 phones on both ends, each playing a quiet tone and keeping what it
heard; the call lasts 5 s. Returns what each side heard and the call's recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from callrec_phone.phone import PhoneProcess
from testkit.audio import tone_wav
from testkit.harness import CallrecServer, free_port

Audio = npt.NDArray[np.int16]


def call_and_hear(
    server: CallrecServer, work: Path
) -> tuple[dict[str, Audio], Audio, dict[str, Any]]:
    """(heard by "phone" and "trunk", the recording, the call's CDR)."""
    talk = tone_wav(work / "talk.wav", 500.0, seconds=6.0, amplitude=0.03)
    trunk_rtp = free_port(even=True, span=4)
    trunk = PhoneProcess(
        server.trunk_phone_args(
            "--rtp-port", str(trunk_rtp), "--play", str(talk),
            "--record-heard", str(work / "trunk-heard.wav"),
        )
    )  # fmt: skip
    trunk.wait_for("started", 15)
    phone = PhoneProcess(
        server.dial_args(
            "202", "pw-202", "--play", str(talk),
            "--record-heard", str(work / "phone-heard.wav"), "--hangup-after", "5",
        )
    )  # fmt: skip
    assert phone.wait(40).returncode == 0
    assert trunk.wait(30).named("confirmed")
    heard = {
        side: sf.read(work / f"{side}-heard.wav", dtype="int16")[0] for side in ("phone", "trunk")
    }
    call = server.wait_for_calls(1)[0]
    recording = server.wait_for_recording(call["id"])
    recorded, _ = sf.read(server.data_dir / recording["path"], dtype="int16")
    return heard, recorded, call
