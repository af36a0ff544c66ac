"""A challenged INVITE's retransmissions, its ACK and a flood, on a fake clock.

The server transaction holds the one 407 (one nonce) and answers every retransmission
with it; Timer G runs only when a provisional went out first (b2bua.transaction).
"""

from __future__ import annotations

from b2bua.message import SipResponse, make_response
from b2bua.transaction import SendMessage, TransactionLayer, TransactionTimeout
from tests.b2bua.test_transaction import PHONE, ack_for, request, run_clock, send_times


def test_challenge_sent_at_once_is_repeated_only_for_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    response = make_response(invite, 407, "Proxy Authentication Required", to_tag="t")
    assert layer.send_response(response, 0.001) == [SendMessage(response, PHONE)]

    # No Timer G: the client is still in Calling and retransmits the INVITE itself.
    assert run_clock(layer, 0.499) == []
    assert layer.receive(invite, PHONE, 0.5) == [SendMessage(response, PHONE)]
    assert layer.receive(invite, PHONE, 1.5) == [SendMessage(response, PHONE)]
    ack = ack_for(invite, response, branch="z9hG4bK-invite-1")
    assert layer.receive(ack, PHONE, 1.6) == []
    # Confirmed: a late retransmission is absorbed, and the transaction ends by Timer I.
    assert layer.receive(invite, PHONE, 1.7) == []
    assert send_times(run_clock(layer, 100.0)) == []
    assert len(layer) == 0


def test_challenge_after_a_provisional_is_retransmitted_until_the_ack() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 0.0)
    # The directory was slow: the INVITE came again and got 100 Trying before the 407.
    (trying,) = layer.receive(invite, PHONE, 0.5)
    assert isinstance(trying, SendMessage) and isinstance(trying.message, SipResponse)
    assert trying.message.status == 100
    response = make_response(invite, 407, "Proxy Authentication Required", to_tag="t")
    layer.send_response(response, 0.7)
    fired = run_clock(layer, 2.0)
    assert send_times(fired) == [1.2]  # Timer G: the client stopped retransmitting at the 100
    assert all(event == SendMessage(response, PHONE) for _, event in fired)
    # The same 407 (one nonce) for a retransmission after it, too.
    assert layer.receive(invite, PHONE, 2.0) == [SendMessage(response, PHONE)]
    layer.receive(ack_for(invite, response, branch="z9hG4bK-invite-1"), PHONE, 2.1)
    assert send_times(run_clock(layer, 100.0)) == []  # the ACK stopped Timer G
    assert len(layer) == 0


def test_a_flood_of_unacknowledged_invites_gets_one_response_each() -> None:
    layer = TransactionLayer()
    sent = 0
    for number in range(200):
        invite = request(branch=f"z9hG4bK-flood-{number}", call_id=f"flood-{number}")
        at = number * 0.003
        assert layer.receive(invite, PHONE, at)  # RequestReceived for the TU
        response = make_response(invite, 407, "Proxy Authentication Required", to_tag="t")
        sent += len(layer.send_response(response, at))
    fired = run_clock(layer, 100.0)
    # Nothing more is ever sent; every transaction ends at Timer H, none is kept.
    assert send_times(fired) == []
    assert sum(isinstance(event, TransactionTimeout) for _, event in fired) == 200
    assert sent == 200
    assert len(layer) == 0


def test_invite_pending_until_its_final_response() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PHONE, 3.0)
    assert layer.invite_pending(invite) == 3.0
    layer.poll(3.2)  # 100 Trying: still waiting for a final response
    assert layer.invite_pending(invite) == 3.0
    layer.send_response(make_response(invite, 487, to_tag="t"), 3.5)
    assert layer.invite_pending(invite) is None
    assert layer.invite_pending(request(branch="z9hG4bK-unknown")) is None
