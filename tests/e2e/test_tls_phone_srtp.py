"""End-to-end, issue 14: a call from a plain trunk to a phone registered over TLS that
wants SRTP. `[sip] tls_phone_srtp` decides what callrec offers it: "require"
(RTP/SAVP with keys) is answered by a phone that insists on SRTP (baresip
`;transport=tls;mediaenc=srtp-mand`, which refuses RTP/AVP even with keys), "offer"
(the default: RTP/AVP with keys) by one that takes SRTP when offered (`mediaenc=srtp`),
and either call's phone leg runs SRTP and is recorded; "off" (plain, as before) is
refused by the insisting phone (the control: the check can fail).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from testkit.baresip import CALL_ESTABLISHED, Baresip, account, registered_over
from tests.e2e.test_tls import Pki, pki, tls_server  # noqa: F401  (pki: fixture)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed"),
]

HOST = "127.0.0.1"
PASSWORD = "pw-tls-100"  # tls_server's user 100


@pytest.mark.parametrize(
    ("mode", "mediaenc"), [("require", "srtp-mand"), ("offer", "srtp"), ("off", "srtp-mand")]
)
def test_a_plain_trunk_reaches_an_srtp_phone_on_tls(
    pki: Pki,  # noqa: F811
    tmp_path: Path,
    mode: str,
    mediaenc: str,
) -> None:
    callrec = tls_server(tmp_path / "callrec", pki)
    server = callrec.server
    text = server.config_path.read_text()
    assert "[sip]\n" in text
    server.config_path.write_text(
        text.replace("[sip]\n", f'[sip]\ntls_phone_srtp = "{mode}"\n', 1)
        + '[recording]\nannouncement = "none"\n'
    )
    server.cli("users", "set-mode", "100", "always")
    phone = Baresip(
        tmp_path / "phone",
        account=account(
            "100", PASSWORD, HOST, callrec.tls_port, transport="tls", mediaenc=mediaenc
        ),
        ca=pki.ca,
        modules=["srtp.so"],
        time_limit_s=20,
    )
    server.start()
    try:
        phone.start()
        phone.wait_for(registered_over("tls"), timeout=10)
        result = server.run_sipp_from_trunk(
            tmp_path / "trunk", callee="100", caller="0612345678", timeout_s=20
        )
        cdr = server.wait_for_calls(1)[0]
        if mode == "off":
            assert not result.ok
            assert cdr["disposition"] != "answered", cdr
            return
        assert result.ok, result.summary() + server.log()[-3000:] + phone.output()[-2000:]
        phone.wait_for(CALL_ESTABLISHED, timeout=5)
        assert cdr["disposition"] == "answered", cdr
        row = server.wait_for_recording(int(cdr["id"]))
        assert row["status"] == "complete", row
        assert re.search(r"leg b media SRTP AEAD_AES_|leg b media SRTP AES_CM_", server.log())
    finally:
        phone.stop()
        server.stop()
