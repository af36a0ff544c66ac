"""End-to-end, issue 14: baresip (Debian 1.0) keys the feature code `*1` on its keypad
through a trunk whose answer has no telephone-event, and the on-demand user's recording
starts from the code.

The trunk is SIPp (`sipp/uas_pcma_only.xml`: its answer is PCMA and nothing else, no
telephone-event payload type, rtpmap or fmtp) with its media on a raw UDP socket of this
test, which counts what reaches the trunk. baresip
sends RFC 4733 events only when the answer it got offers telephone-event, so the call
shows that callrec kept telephone-event in its answer to the phone; the trunk gets no
event packet (it did not ask for them), and the recording's one span starts when the
code was keyed (`/sndcode` through baresip's ctrl_tcp, `testkit/baresip.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from testkit.baresip import CALL_ESTABLISHED, Baresip, account, registered_over
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, make_server
from testkit.sipp_runner import free_port, start_sipp
from testkit.waiting import wait_until
from tests.e2e.test_on_demand import toggles
from tests.e2e.test_wideband import TELEPHONE_EVENT, UdpMedia

pytestmark = pytest.mark.e2e

PASSWORD = "pw-201"
PCMA_ONLY = str(Path(__file__).parent / "sipp" / "uas_pcma_only.xml")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(
        tmp_path_factory.mktemp("callrec-baresip-code"),
        extra_config='[recording]\nannouncement = "none"\n',
    )
    srv.add_user("201", "Alice On-demand", PASSWORD, "--mode", "on-demand")
    yield from srv.serving()


def test_baresip_keys_star_1_through_a_trunk_without_telephone_event(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = len(server.calls())
    trunk_rtp = UdpMedia(echo=False)
    try:
        trunk = start_sipp(
            PCMA_ONLY,
            work_dir=tmp_path / "uas",
            timeout_s=30,
            local_port=server.trunk_port,
            media_port=free_port(even=True, span=4),
            keys={"rtp_port": str(trunk_rtp.port)},
            trace_messages=True,
        )
        # 3 s of a 440 Hz tone (16-bit, as aufile wants): baresip hangs up when it ends.
        tone = 6000 * np.sin(2 * np.pi * 440 * np.arange(3 * 8000) / 8000)
        sf.write(tmp_path / "tone.wav", tone.astype(np.int16), 8000, subtype="PCM_16")
        phone = Baresip(
            tmp_path / "phone",
            account=account("201", PASSWORD, HOST, server.sip_port),
            commands=[f"/dial {TRUNK_NUMBER}"],
            play=tmp_path / "tone.wav",
            time_limit_s=10,
            control=True,
        )
        try:
            phone.start()
            phone.wait_for(registered_over("udp"), timeout=10)
            phone.wait_for(CALL_ESTABLISHED, timeout=10)
            established = time.monotonic()
            # Key once media flows (half a second of it at the trunk).
            wait_until(lambda: len(trunk_rtp.received) >= 25, timeout=5, what="media at the trunk")
            keyed = time.monotonic() - established
            # One key at a time: `sndcode` presses each of its keys and releases only
            # the last, as a keypad that is never let go.
            phone.command("sndcode", "*")
            phone.command("sndcode", "1")
            phone.wait_for(r"[Cc]all with .* terminated", timeout=10)
        finally:
            phone.stop()
        assert trunk.wait().ok
    finally:
        trunk_rtp.close()
    counts = trunk_rtp.payload_types()
    # The trunk answered PCMA only: it got the phone's audio, and not one event packet.
    assert TELEPHONE_EVENT not in counts and counts.get(8, 0) > 100, counts
    call = server.wait_for_calls(before + 1)[0]
    assert call["disposition"] == "answered"
    recording = server.wait_for_recording(int(call["id"]))
    assert recording["status"] == "complete", recording
    [(start, end)] = recording["segments"]
    # From the code (keyed `keyed` s after baresip said the call was up, which is a
    # little after callrec's answer) to the end of the call.
    assert keyed - 0.1 <= start <= keyed + 0.6, (recording["segments"], keyed)
    assert end - start > 1.0
    audio, rate = sf.read(server.data_dir / str(recording["path"]), dtype="int16")
    assert abs(len(audio) / rate - (end - start)) < 0.2
    logged = toggles(server, int(recording["id"]))
    assert [(action, method) for _, action, method in logged] == [("start", "rfc4733")]
