"""SRTP through a real media worker: one phone speaks SRTP (libsrtp in the test, with
its own keys), the other plain RTP, over UDP on 127.0.0.1.

The worker decrypts what the SRTP phone sends, forwards plaintext to the plain phone,
encrypts the plain phone's packets with callrec's key for the SRTP phone, and records
the plaintext. Tampered, replayed and wrongly keyed packets are dropped and counted, the
call goes on, and no key reaches the logs (the worker runs at DEBUG here).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest
import soundfile as sf

from b2bua.sdes import MasterKey
from callrec.app import background_tasks
from callrec.workers import RemoteMedia, WorkerPool
from media import g711
from testkit.sipp_runner import free_port
from testkit.waiting import wait_until_async
from tests.workers.test_pool import HOST, SDP, Phone, spec_for

SUITE = "AES_CM_128_HMAC_SHA1_80"
PACKETS = 60
BAD_AT = 30  # the bad packets go in after this many good ones
FRAME = 160


def payload(sequence: int) -> bytes:
    """20 ms of a tone whose pitch changes with every packet: unambiguous to find again."""
    t = np.arange(FRAME) + FRAME * sequence
    pcm = (9000 * np.sin(t * (0.05 + 0.01 * (sequence % 17)))).astype(np.int16)
    return g711.alaw_encode(pcm).tobytes()


def rtp(sequence: int, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, FRAME * sequence, ssrc)
    return header + payload(sequence)


def session(key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key,
            ssrc_type=ssrc_type,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )


@pytest.fixture
async def pool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[WorkerPool, Path]]:
    """One worker logging at DEBUG (even there no key may appear) into a file of its
    own: its stderr is that file, handed to it at start."""
    monkeypatch.setenv("CALLREC_LOG_LEVEL", "DEBUG")
    log_path = tmp_path / "worker.log"
    first = free_port(even=True, span=8)
    async with background_tasks() as spawn:
        started = WorkerPool(
            address=HOST,
            first_port=first,
            last_port=first + 7,
            workers=1,
            spawn=spawn,
            silence_timeout=None,
        )
        saved = os.dup(2)
        try:
            with log_path.open("ab") as log_file:
                os.dup2(log_file.fileno(), 2)
                try:
                    await started.start()
                finally:
                    os.dup2(saved, 2)
            yield started, log_path
        finally:
            os.close(saved)
            await started.stop()


async def test_an_srtp_leg_and_a_plain_leg_relay_record_and_count_bad_packets(
    pool: tuple[WorkerPool, Path], tmp_path: Path
) -> None:
    workers, log_path = pool
    phone_key, callrec_key = secrets.token_bytes(30), secrets.token_bytes(30)
    srtp_phone, plain_phone = Phone(), Phone()
    sends = session(phone_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    hears = session(callrec_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    media: RemoteMedia = await workers.open(on_silence=lambda _leg: None, on_idle=lambda: None)
    try:
        media.set_remote("a", HOST, srtp_phone.port)
        media.set_remote("b", HOST, plain_phone.port)
        media.set_crypto("a", MasterKey(SUITE, phone_key), MasterKey(SUITE, callrec_key))
        spec = spec_for(tmp_path, "srtp")
        media.start_recording(
            spec,
            {
                "a": SDP.format(port=srtp_phone.port).encode(),
                "b": SDP.format(port=plain_phone.port).encode(),
            },
            print,
        )
        relay_a, relay_b = (HOST, media.local_port("a")), (HOST, media.local_port("b"))

        # The worker has the keys once a plain packet reaches the SRTP phone encrypted
        # (the keys were sent after the addresses, on the same ordered channel).
        def keyed() -> bool:
            plain_phone.sock.sendto(rtp(0, 0x5678), relay_b)
            srtp_phone.drain()
            for data in srtp_phone.received:
                try:
                    hears.unprotect(data)
                    return True
                except pylibsrtp.Error:
                    continue
            return False

        await wait_until_async(keyed, timeout=5, what="the worker using the SRTP keys")
        srtp_phone.received.clear()
        plain_phone.drain()
        plain_phone.received.clear()

        loop = asyncio.get_running_loop()
        start = loop.time()
        sent: list[bytes] = []
        for sequence in range(1, PACKETS + 1):
            sent.append(sends.protect(rtp(sequence, 0x1234)))
            srtp_phone.sock.sendto(sent[-1], relay_a)
            plain_phone.sock.sendto(rtp(sequence, 0x5678), relay_b)
            if sequence == BAD_AT:
                tampered = bytearray(sent[-5])
                tampered[20] ^= 0x01
                wrong_key = session(secrets.token_bytes(30), pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
                for bad in (bytes(tampered), sent[3], wrong_key.protect(rtp(500, 0x1234))):
                    srtp_phone.sock.sendto(bad, relay_a)
            # Paced like a phone (the recorder places audio by arrival and timestamp).
            await asyncio.sleep(max(0.0, start + sequence * 0.02 - loop.time()))

        await wait_until_async(
            lambda: plain_phone.drain() >= PACKETS and srtp_phone.drain() >= PACKETS,
            timeout=5,
            what="every good packet through both ways",
        )
        # The plain phone got exactly the plaintext, in order, and nothing bad.
        assert plain_phone.received == [rtp(s, 0x1234) for s in range(1, PACKETS + 1)]
        # The SRTP phone got ciphertext that its key for callrec opens.
        for sequence, data in enumerate(srtp_phone.received, start=1):
            assert payload(sequence) not in data
            assert hears.unprotect(data) == rtp(sequence, 0x5678)
    finally:
        media.close()
        srtp_phone.close()
        plain_phone.close()
    outcome = await asyncio.wait_for(asyncio.ensure_future(media.stop_recording(time.time())), 10)
    assert outcome.status == "complete", outcome

    audio, rate = sf.read(spec.absolute, dtype="int16", always_2d=True)
    assert rate == 8000
    spoken = g711.alaw_decode(
        np.frombuffer(b"".join(payload(s) for s in range(1, PACKETS + 1)), dtype=np.uint8)
    )
    # The SRTP phone (leg a, the internal leg) is the left channel: its plaintext is in
    # the file sample for sample.
    left = audio[:, 0]
    found = [
        offset
        for offset in range(len(left) - len(spoken) + 1)
        if left[offset] == spoken[0] and np.array_equal(left[offset : offset + len(spoken)], spoken)
    ]
    assert found, "the decrypted audio is not in the recording sample for sample"

    # The three bad packets were counted on leg a (the worker says so as the session
    # closes), and no key, in any encoding, is in what the worker logged at DEBUG.
    await wait_until_async(
        lambda: "3 SRTP packet(s) failed" in log_path.read_text(),
        timeout=5,
        what="the worker's SRTP summary",
    )
    text = log_path.read_text()
    assert "(leg a: 3, leg b: 0)" in text
    for key in (phone_key, callrec_key):
        for shown in (base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1]):
            assert shown not in text
