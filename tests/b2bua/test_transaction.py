"""RFC 3261 §17 / RFC 6026 transactions driven by a fake clock."""

from __future__ import annotations

import pytest

from b2bua.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    make_response,
    parse_message,
)
from b2bua.peer import Peer
from b2bua.transaction import (
    Event,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionError,
    TransactionLayer,
    TransactionTimeout,
    make_cancel,
)

PHONE = Peer("127.0.0.1", 5070)
TRUNK = Peer("127.0.0.1", 5080)
PHONE_TCP = Peer("127.0.0.1", 5070, "tcp")


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-invite-1",
    seq: int = 1,
    call_id: str = "call-1@test",
    from_tag: str = "alice-tag",
    to: str = "<sip:bob@example.com>",
    transport: str = "UDP",
) -> SipRequest:
    via = f"SIP/2.0/{transport} 127.0.0.1:5070"
    if branch is not None:
        via += f";branch={branch}"
    headers = Headers(
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@example.com>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {method}"),
            ("Contact", "<sip:alice@127.0.0.1:5070>"),
        ]
    )
    return SipRequest(method, "sip:bob@example.com", headers)


def ack_for(invite: SipRequest, response: SipResponse, *, branch: str) -> SipRequest:
    """An ACK as the far end would send it: its own branch for a 2xx, the INVITE's if not."""
    ack = request("ACK", branch=branch, seq=_seq(invite), from_tag=_from_tag(invite))
    ack.headers.set("To", _header(response, "To"))
    return ack


def _header(message: SipRequest | SipResponse, name: str) -> str:
    value = message.headers.get(name)
    assert value is not None
    return value


def _seq(message: SipRequest | SipResponse) -> int:
    return int(_header(message, "CSeq").split()[0])


def _from_tag(message: SipRequest | SipResponse) -> str:
    tag = NameAddr.parse(_header(message, "From")).tag
    assert tag is not None
    return tag


def run_clock(layer: TransactionLayer, until: float) -> list[tuple[float, Event]]:
    """Poll at every deadline up to ``until``; return (time, event) pairs."""
    fired: list[tuple[float, Event]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        fired.extend((deadline, event) for event in layer.poll(deadline))
    return fired


def send_times(fired: list[tuple[float, Event]]) -> list[float]:
    return [round(at, 6) for at, event in fired if isinstance(event, SendMessage)]


# --- client INVITE ----------------------------------------------------------------------


def test_client_invite_retransmits_with_timer_a_and_times_out_with_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    assert layer.send_request(invite, TRUNK, 0.0) == [SendMessage(invite, TRUNK)]

    fired = run_clock(layer, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(event == SendMessage(invite, TRUNK) for _, event in fired[:-1])
    assert fired[-1] == (32.0, TransactionTimeout(invite, timer="B"))
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_client_invite_provisional_stops_retransmission_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, TRUNK, 0.0)
    ringing = make_response(invite, 180, "Ringing", to_tag="bob-tag")

    assert layer.receive(ringing, TRUNK, 0.7) == [ResponseReceived(ringing, invite)]

    # Nothing more until the TU acts: no retransmission, no Timer B timeout.
    assert run_clock(layer, 100.0) == []
    assert len(layer) == 1


def test_client_invite_acks_non_2xx_itself_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    invite.headers.add("Route", "<sip:proxy.example.com;lr>")
    layer.send_request(invite, TRUNK, 0.0)
    busy = make_response(invite, 486, "Busy Here", to_tag="bob-tag")

    events = layer.receive(busy, TRUNK, 0.2)

    assert len(events) == 2
    send, received = events
    assert received == ResponseReceived(busy, invite)
    assert isinstance(send, SendMessage) and send.peer == TRUNK
    ack = send.message
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert NameAddr.parse(_header(ack, "To")).tag == "bob-tag"
    assert _header(ack, "CSeq").split() == ["1", "ACK"]
    assert _header(ack, "Call-ID") == "call-1@test"
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    on_the_wire = parse_message(ack.to_bytes())
    assert isinstance(on_the_wire, SipRequest) and on_the_wire.method == "ACK"
    assert list(on_the_wire.headers)[:7] == list(ack.headers)

    # A retransmitted 486 gets the same ACK again and is not passed up.
    assert layer.receive(busy, TRUNK, 1.0) == [SendMessage(ack, TRUNK)]
    # Timer D (32 s on UDP, from the first 486) ends the transaction.
    assert run_clock(layer, 32.1) == []
    assert len(layer) == 1
    run_clock(layer, 32.2)
    assert len(layer) == 0
    assert layer.receive(busy, TRUNK, 33.0) == []
    assert layer.dropped == 1


def test_client_invite_passes_every_2xx_up_until_timer_m() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, TRUNK, 0.0)
    ok = make_response(invite, 200, "OK", to_tag="bob-tag")

    assert layer.receive(ok, TRUNK, 0.1) == [ResponseReceived(ok, invite)]
    assert layer.receive(ok, TRUNK, 0.6) == [ResponseReceived(ok, invite)]
    assert run_clock(layer, 32.0) == []  # no retransmission of the INVITE, no timeout
    assert len(layer) == 1
    run_clock(layer, 32.2)  # Timer M = 64*T1 from the first 2xx
    assert len(layer) == 0
    assert layer.receive(ok, TRUNK, 40.0) == []
    assert layer.dropped == 1


def test_client_invite_timers_follow_t1_parameter() -> None:
    layer = TransactionLayer(t1=0.1)
    layer.send_request(request(), TRUNK, 10.0)
    fired = run_clock(layer, 100.0)
    assert send_times(fired) == [10.1, 10.3, 10.7, 11.5, 13.1, 16.3]
    assert fired[-1][0] == pytest.approx(16.4)
    assert isinstance(fired[-1][1], TransactionTimeout)


# --- client non-INVITE ------------------------------------------------------------------


def test_client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, TRUNK, 0.0)

    fired = run_clock(layer, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, TransactionTimeout(options, timer="F"))
    assert len(layer) == 0


def test_client_non_invite_proceeding_retransmits_every_t2_then_timer_k() -> None:
    layer = TransactionLayer()
    bye = request("BYE", branch="z9hG4bK-bye", seq=2)
    layer.send_request(bye, TRUNK, 0.0)
    assert send_times(run_clock(layer, 0.5)) == [0.5]
    trying = make_response(bye, 100, "Trying")
    assert layer.receive(trying, TRUNK, 0.7) == [ResponseReceived(trying, bye)]

    assert send_times(run_clock(layer, 10.0)) == [1.5, 5.5, 9.5]

    ok = make_response(bye, 200, "OK", to_tag="bob-tag")
    assert layer.receive(ok, TRUNK, 10.0) == [ResponseReceived(ok, bye)]
    assert layer.receive(ok, TRUNK, 10.5) == []  # Completed absorbs retransmissions
    assert run_clock(layer, 14.9) == []
    assert len(layer) == 1
    run_clock(layer, 15.0)  # Timer K = T4
    assert len(layer) == 0


def test_cancel_is_a_separate_client_transaction_with_the_invite_branch() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, TRUNK, 0.0)
    layer.receive(make_response(invite, 180, "Ringing", to_tag="bob-tag"), TRUNK, 0.1)
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.headers.get_all("Via") == invite.headers.get_all("Via")
    assert _header(cancel, "CSeq").split() == ["1", "CANCEL"]

    assert layer.send_request(cancel, TRUNK, 0.2) == [SendMessage(cancel, TRUNK)]
    ok_cancel = make_response(cancel, 200, "OK", to_tag="bob-tag")
    terminated = make_response(invite, 487, "Request Terminated", to_tag="bob-tag")
    assert layer.receive(ok_cancel, TRUNK, 0.3) == [ResponseReceived(ok_cancel, cancel)]
    events = layer.receive(terminated, TRUNK, 0.3)
    assert events[-1] == ResponseReceived(terminated, invite)


# --- server INVITE ----------------------------------------------------------------------


def test_server_invite_sends_100_trying_after_200_ms_without_tu_answer() -> None:
    layer = TransactionLayer()
    invite = request()
    assert layer.receive(invite, PHONE, 0.0) == [RequestReceived(invite, PHONE)]

    fired = run_clock(layer, 1.0)

    assert len(fired) == 1
    at, event = fired[0]
    assert at == pytest.approx(0.2)
    assert isinstance(event, SendMessage) and event.peer == PHONE
    assert isinstance(event.message, SipResponse) and event.message.status == 100
    # A retransmitted INVITE gets the last provisional again, and is not passed up.
    assert layer.receive(invite, PHONE, 0.5) == [SendMessage(event.message, PHONE)]


def test_server_invite_no_automatic_trying_when_tu_answers_quickly() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    ringing = make_response(invite, 180, "Ringing", to_tag="bob-tag")
    assert layer.send_response(ringing, 0.1) == [SendMessage(ringing, PHONE)]
    assert run_clock(layer, 1.0) == []
    assert layer.receive(invite, PHONE, 0.5) == [SendMessage(ringing, PHONE)]


def test_server_invite_retransmission_before_any_answer_gets_100_at_once() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    events = layer.receive(invite, PHONE, 0.1)
    assert len(events) == 1 and isinstance(events[0], SendMessage)
    assert isinstance(events[0].message, SipResponse) and events[0].message.status == 100
    assert run_clock(layer, 1.0) == []  # the 200 ms Trying timer is spent


def test_server_invite_non_2xx_retransmitted_by_timer_g_until_ack_absorbed() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    layer.receive(invite, PHONE, 0.05)  # a 100 Trying goes out: the client stops retransmitting
    busy = make_response(invite, 486, "Busy Here", to_tag="bob-tag")
    layer.send_response(busy, 0.1)

    fired = run_clock(layer, 13.0)
    assert send_times(fired) == [0.6, 1.6, 3.6, 7.6, 11.6]
    assert all(event == SendMessage(busy, PHONE) for _, event in fired)

    assert layer.receive(invite, PHONE, 13.0) == [SendMessage(busy, PHONE)]
    ack = ack_for(invite, busy, branch="z9hG4bK-invite-1")
    assert layer.receive(ack, PHONE, 13.0) == []  # absorbed, never passed up
    # Confirmed: further ACKs and INVITEs are absorbed, nothing is retransmitted.
    assert layer.receive(ack, PHONE, 14.0) == []
    assert layer.receive(invite, PHONE, 14.0) == []
    assert run_clock(layer, 17.9) == []
    assert len(layer) == 1
    run_clock(layer, 18.0)  # Timer I = T4 after the ACK
    assert len(layer) == 0


def test_server_invite_non_2xx_without_ack_times_out_with_timer_h() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    layer.poll(0.2)  # the automatic 100 Trying
    layer.send_response(make_response(invite, 404, "Not Found", to_tag="t"), 1.0)

    fired = run_clock(layer, 100.0)

    assert send_times(fired) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert fired[-1] == (33.0, TransactionTimeout(invite, timer="H"))
    assert len(layer) == 0


def test_server_invite_2xx_retransmitted_until_ack_with_its_own_branch() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    ok = make_response(invite, 200, "OK", to_tag="bob-tag")
    assert layer.send_response(ok, 0.0) == [SendMessage(ok, PHONE)]

    fired = run_clock(layer, 8.0)
    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5]
    assert all(event == SendMessage(ok, PHONE) for _, event in fired)
    assert layer.receive(invite, PHONE, 8.0) == []  # RFC 6026: absorbed in Accepted

    ack = ack_for(invite, ok, branch="z9hG4bK-ack-of-2xx")
    assert layer.receive(ack, PHONE, 8.5) == [RequestReceived(ack, PHONE)]

    # No more retransmissions, and no timeout: Timer L just ends the transaction.
    assert run_clock(layer, 100.0) == []
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_server_invite_2xx_without_ack_times_out_with_timer_l() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    ok = make_response(invite, 200, "OK", to_tag="bob-tag")
    layer.send_response(ok, 0.0)

    fired = run_clock(layer, 100.0)

    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, TransactionTimeout(invite, timer="L"))
    assert len(layer) == 0


def test_ack_of_2xx_for_another_invite_does_not_stop_retransmission() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    ok = make_response(invite, 200, "OK", to_tag="bob-tag")
    layer.send_response(ok, 0.0)
    stray = request("ACK", branch="z9hG4bK-other", seq=7)

    assert layer.receive(stray, PHONE, 0.1) == [RequestReceived(stray, PHONE)]
    assert send_times(run_clock(layer, 1.0)) == [0.5]


def test_server_cancel_finds_the_invite_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    layer.send_response(make_response(invite, 180, "Ringing", to_tag="bob-tag"), 0.05)
    cancel = make_cancel(invite)

    assert layer.receive(cancel, PHONE, 1.0) == [RequestReceived(cancel, PHONE)]
    assert layer.find_invite_server_transaction(cancel) is invite
    other = make_cancel(request(branch="z9hG4bK-unknown"))
    assert layer.find_invite_server_transaction(other) is None

    ok_cancel = make_response(cancel, 200, "OK", to_tag="bob-tag")
    terminated = make_response(invite, 487, "Request Terminated", to_tag="bob-tag")
    assert layer.send_response(ok_cancel, 1.0) == [SendMessage(ok_cancel, PHONE)]
    assert layer.send_response(terminated, 1.0) == [SendMessage(terminated, PHONE)]
    # A retransmitted CANCEL gets its own 200 again, not the INVITE's 487.
    assert layer.receive(cancel, PHONE, 1.2) == [SendMessage(ok_cancel, PHONE)]
    assert layer.receive(ack_for(invite, terminated, branch="z9hG4bK-invite-1"), PHONE, 1.3) == []


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    layer = TransactionLayer()
    invite = request("OPTIONS", branch="z9hG4bK-same")
    layer.receive(invite, PHONE, 0.0)
    clash = request("OPTIONS", branch="z9hG4bK-same")
    clash.headers.set("Via", "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-same")
    assert layer.receive(clash, PHONE, 0.0) == [RequestReceived(clash, PHONE)]
    assert len(layer) == 2


# --- server non-INVITE ------------------------------------------------------------------


def test_server_non_invite_absorbs_then_repeats_final_until_timer_j() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", branch="z9hG4bK-opt")
    assert layer.receive(options, PHONE, 0.0) == [RequestReceived(options, PHONE)]
    assert layer.receive(options, PHONE, 0.5) == []  # Trying: absorbed silently
    trying = make_response(options, 100, "Trying")
    layer.send_response(trying, 0.6)
    assert layer.receive(options, PHONE, 1.0) == [SendMessage(trying, PHONE)]
    ok = make_response(options, 200, "OK", to_tag="bob-tag")
    assert layer.send_response(ok, 1.0) == [SendMessage(ok, PHONE)]
    assert layer.receive(options, PHONE, 2.0) == [SendMessage(ok, PHONE)]
    with pytest.raises(TransactionError):
        layer.send_response(ok, 2.0)
    assert run_clock(layer, 32.9) == []
    assert len(layer) == 1
    run_clock(layer, 33.0)  # Timer J = 64*T1
    assert len(layer) == 0


# --- reliable transport -----------------------------------------------------------------


def test_reliable_client_invite_no_retransmission_timer_b_still_runs() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    tcp_trunk = Peer("127.0.0.1", 5080, "tcp")
    layer.send_request(invite, tcp_trunk, 0.0)
    assert run_clock(layer, 100.0) == [(32.0, TransactionTimeout(invite, timer="B"))]


def test_reliable_client_invite_non_2xx_ends_at_once() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    tcp_trunk = Peer("127.0.0.1", 5080, "tcp")
    layer.send_request(invite, tcp_trunk, 0.0)
    events = layer.receive(make_response(invite, 503, "Unavailable", to_tag="x"), tcp_trunk, 1)
    assert isinstance(events[0], SendMessage) and isinstance(events[0].message, SipRequest)
    assert events[0].message.method == "ACK"
    assert len(layer) == 0  # Timer D = 0


def test_a_peer_that_cannot_be_reached_ends_its_waiting_client_transactions_at_once() -> None:
    layer = TransactionLayer()
    tls_trunk = Peer("127.0.0.1", 5081, "tls")
    invite = request(transport="TLS", branch="z9hG4bK-to-trunk")
    options = request("OPTIONS", transport="TLS", branch="z9hG4bK-options")
    answered = request(transport="TLS", branch="z9hG4bK-answered", call_id="call-2@test")
    elsewhere = request(branch="z9hG4bK-elsewhere", call_id="call-3@test")
    for message, peer in ((invite, tls_trunk), (options, tls_trunk), (answered, tls_trunk)):
        layer.send_request(message, peer, 0.0)
    layer.send_request(elsewhere, TRUNK, 0.0)
    layer.receive(make_response(answered, 180, "Ringing", to_tag="t"), tls_trunk, 0.5)
    events = layer.transport_failed(tls_trunk, 1.0)
    assert events == [
        TransactionTimeout(invite, timer="transport"),
        TransactionTimeout(options, timer="transport"),
    ]
    assert len(layer) == 2  # the one with a provisional response and the other peer's
    assert layer.transport_failed(tls_trunk, 2.0) == []
    # Neither fires Timer B later.
    assert all(
        event.request is not invite
        for _, event in run_clock(layer, 100.0)
        if isinstance(event, TransactionTimeout)
    )


def test_reliable_client_non_invite_no_retransmission_and_k_is_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    tcp_trunk = Peer("127.0.0.1", 5080, "tcp")
    layer.send_request(options, tcp_trunk, 0.0)
    assert run_clock(layer, 10.0) == []
    layer.receive(make_response(options, 200, "OK", to_tag="x"), tcp_trunk, 10.0)
    assert len(layer) == 0


def test_reliable_server_invite_non_2xx_no_timer_g_and_i_is_zero() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    layer.receive(invite, PHONE_TCP, 0.0)
    busy = make_response(invite, 486, "Busy Here", to_tag="bob-tag")
    layer.send_response(busy, 0.1)
    assert run_clock(layer, 10.0) == []
    assert layer.receive(ack_for(invite, busy, branch="z9hG4bK-invite-1"), PHONE_TCP, 10) == []
    assert len(layer) == 0


def test_reliable_server_non_invite_j_is_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    layer.receive(options, PHONE_TCP, 0.0)
    layer.send_response(make_response(options, 200, "OK", to_tag="x"), 0.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_reliable_server_2xx_is_still_retransmitted_end_to_end() -> None:
    # RFC 3261 §13.3.1.4: 2xx retransmission is independent of this hop's transport.
    layer = TransactionLayer()
    invite = request(transport="TCP")
    layer.receive(invite, PHONE_TCP, 0.0)
    ok = make_response(invite, 200, "OK", to_tag="bob-tag")
    layer.send_response(ok, 0.0)
    assert send_times(run_clock(layer, 2.0)) == [0.5, 1.5]
    layer.receive(ack_for(invite, ok, branch="z9hG4bK-ack"), PHONE_TCP, 2.0)
    assert run_clock(layer, 100.0) == []


# --- matching corner cases --------------------------------------------------------------


def test_stray_response_is_dropped_and_counted() -> None:
    layer = TransactionLayer()
    stray = make_response(request(branch="z9hG4bK-nobody"), 200, "OK", to_tag="x")
    assert layer.receive(stray, TRUNK, 0.0) == []
    no_via = SipResponse(200, "OK", Headers([("CSeq", "1 INVITE")]))
    assert layer.receive(no_via, TRUNK, 0.0) == []
    assert layer.dropped == 2


def test_response_matches_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, TRUNK, 0.0)
    wrong_method = make_response(request("OPTIONS"), 200, "OK", to_tag="x")
    assert layer.receive(wrong_method, TRUNK, 0.1) == []
    assert layer.dropped == 1


def test_rfc2543_request_without_cookie_matches_retransmission_and_ack() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    assert layer.receive(invite, PHONE, 0.0) == [RequestReceived(invite, PHONE)]
    busy = make_response(invite, 486, "Busy Here", to_tag="bob-tag")
    layer.send_response(busy, 0.1)
    assert layer.receive(invite, PHONE, 0.2) == [SendMessage(busy, PHONE)]
    ack = ack_for(invite, busy, branch="")
    ack.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070")
    assert layer.receive(ack, PHONE, 0.3) == []
    next_invite = request(branch=None, seq=2)
    assert layer.receive(next_invite, PHONE, 0.4) == [RequestReceived(next_invite, PHONE)]


def test_responses_go_to_the_peer_the_request_came_from() -> None:
    layer = TransactionLayer()
    elsewhere = Peer("127.0.0.1", 40000)
    invite = request()  # Via says 5070, but it arrived from port 40000 (NAT)
    layer.receive(invite, elsewhere, 0.0)
    ringing = make_response(invite, 180, "Ringing", to_tag="t")
    assert layer.send_response(ringing, 0.0) == [SendMessage(ringing, elsewhere)]


def test_tu_misuse_raises_transaction_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError):
        layer.send_response(make_response(request(), 200, "OK", to_tag="x"), 0.0)
    invite = request()
    layer.send_request(invite, TRUNK, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(invite, TRUNK, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch=None), TRUNK, 0.0)


def test_ack_of_2xx_sent_by_tu_needs_no_transaction() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bK-ack")
    assert layer.send_request(ack, TRUNK, 0.0) == [SendMessage(ack, TRUNK)]
    assert len(layer) == 0


def test_finished_transactions_are_forgotten() -> None:
    layer = TransactionLayer()
    for n in range(200):
        invite = request(branch=f"z9hG4bK-in-{n}", call_id=f"in-{n}")
        layer.receive(invite, PHONE, 0.0)
        ok = make_response(invite, 200, "OK", to_tag="t")
        layer.send_response(ok, 0.0)
        layer.receive(ack_for(invite, ok, branch=f"z9hG4bK-ack-{n}"), PHONE, 0.1)
        outgoing = request(branch=f"z9hG4bK-out-{n}", call_id=f"out-{n}")
        layer.send_request(outgoing, TRUNK, 0.0)
        layer.receive(make_response(outgoing, 404, "Not Found", to_tag="t"), TRUNK, 0.1)
        options = request("OPTIONS", branch=f"z9hG4bK-opt-{n}", call_id=f"opt-{n}")
        layer.send_request(options, TRUNK, 0.0)
    assert len(layer) == 600

    run_clock(layer, 100.0)

    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer._accepted == {}
    assert layer._timers == []


def test_via_of_generated_ack_is_the_invites_top_via_only() -> None:
    layer = TransactionLayer()
    invite = request()
    invite.headers.add("Via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-lower")
    layer.send_request(invite, TRUNK, 0.0)
    events = layer.receive(make_response(invite, 480, "Unavailable", to_tag="t"), TRUNK, 0.1)
    assert isinstance(events[0], SendMessage)
    vias = events[0].message.headers.get_all("Via")
    assert [Via.parse(v).branch for v in vias] == ["z9hG4bK-invite-1"]


def test_wire_invite_round_trip_through_the_layer() -> None:
    wire = (
        b"INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-wire;rport\r\n"
        b"f: Alice <sip:alice@127.0.0.1>;tag=wire-tag\r\n"
        b"t: <sip:bob@127.0.0.1>\r\n"
        b"i: wire-call@127.0.0.1\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"Max-Forwards: 70\r\n"
        b"l: 0\r\n\r\n"
    )
    layer = TransactionLayer()
    invite = parse_message(wire)
    assert isinstance(invite, SipRequest)
    layer.receive(invite, PHONE, 0.0)
    [trying] = layer.poll(0.2)
    assert isinstance(trying, SendMessage)
    response = parse_message(trying.message.to_bytes())
    assert isinstance(response, SipResponse) and response.status == 100
    assert Via.parse(response.headers.get_all("Via")[0]).branch == "z9hG4bK-wire"
    busy = make_response(invite, 486, "Busy Here", to_tag="bob-tag")
    layer.send_response(busy, 1.0)
    ack = parse_message(
        wire.replace(b"INVITE sip", b"ACK sip")
        .replace(b"7 INVITE", b"7 ACK")
        .replace(b"t: <sip:bob@127.0.0.1>", b"t: <sip:bob@127.0.0.1>;tag=bob-tag")
    )
    assert layer.receive(ack, PHONE, 1.1) == []
    assert layer.poll(100.0) == []
    assert len(layer) == 0
