"""The control channel's framing: whole messages back, whatever the byte stream's splits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.workers.protocol import (
    MAX_FRAME,
    FrameDecoder,
    ProtocolError,
    encode,
    pack_bytes,
    unpack_bytes,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
messages = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@given(st.lists(messages, max_size=6), st.data())
def test_any_split_of_the_stream_gives_back_the_messages_in_order(
    sent: list[dict[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(encode(message) for message in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    received: list[dict[str, object]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        received += decoder.feed(stream[start:cut])
        start = cut
    assert received == sent
    assert decoder.pending == 0


@given(st.binary(max_size=300))
def test_bytes_survive_the_trip_as_text(body: bytes) -> None:
    frame = encode({"body": pack_bytes(body)})
    [message] = FrameDecoder().feed(frame)
    assert unpack_bytes(message["body"]) == body


def test_a_header_alone_waits_for_its_body() -> None:
    frame = encode({"op": "close", "sid": 7})
    decoder = FrameDecoder()
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"op": "close", "sid": 7}]


def test_an_oversized_frame_is_refused_before_its_body_arrives() -> None:
    with pytest.raises(ProtocolError, match="over the"):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="over the"):
        encode({"body": "x" * MAX_FRAME})


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_frame_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)
