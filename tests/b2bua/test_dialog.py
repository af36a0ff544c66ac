"""Dialog state (RFC 3261 §12) and its use with the transaction layer."""

from __future__ import annotations

from b2bua.dialog import Dialog
from b2bua.message import (
    CSeq,
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    generate_branch,
    make_response,
)
from b2bua.peer import Peer
from b2bua.transaction import RequestReceived, SendMessage, TransactionLayer


def invite() -> SipRequest:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@example.com>;tag=alice-tag'),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "dialog-call@test"),
            ("CSeq", "10 INVITE"),
            ("Contact", "<sip:alice@127.0.0.1:5070>"),
            ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
            ("Proxy-Authorization", 'Digest username="alice"'),
        ]
    )
    return SipRequest("INVITE", "sip:bob@example.com", headers)


def answer(request: SipRequest, status: int = 200) -> SipResponse:
    response = make_response(request, status, "OK", to_tag="bob-tag")
    response.headers.add("Contact", "<sip:bob@127.0.0.1:5080;transport=udp>")
    for value in request.headers.get_all("Record-Route"):
        response.headers.add("Record-Route", value)
    return response


def header(message: SipRequest | SipResponse, name: str) -> str:
    value = message.headers.get(name)
    assert value is not None, name
    return value


def test_uac_dialog_from_request_and_2xx() -> None:
    request = invite()
    dialog = Dialog.uac(request, answer(request))

    assert dialog.id == ("dialog-call@test", "alice-tag", "bob-tag")
    assert dialog.local_uri == "sip:alice@example.com"
    assert dialog.remote_uri == "sip:bob@example.com"
    assert dialog.local_seq == 10
    assert dialog.remote_seq is None
    assert dialog.remote_target == "sip:bob@127.0.0.1:5080;transport=udp"
    # The UAC uses the Record-Route set in reverse.
    assert dialog.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_uac_new_request_uses_loose_routing_and_increments_cseq() -> None:
    request = invite()
    dialog = Dialog.uac(request, answer(request))

    bye = dialog.new_request("BYE")

    assert bye.method == "BYE"
    assert bye.uri == "sip:bob@127.0.0.1:5080;transport=udp"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert CSeq.parse(header(bye, "CSeq")) == CSeq(11, "BYE")
    assert header(bye, "Call-ID") == "dialog-call@test"
    sender = NameAddr.parse(header(bye, "From"))
    receiver = NameAddr.parse(header(bye, "To"))
    assert (sender.uri, sender.tag, sender.display) == (
        "sip:alice@example.com",
        "alice-tag",
        "Alice",
    )
    assert (receiver.uri, receiver.tag) == ("sip:bob@example.com", "bob-tag")
    assert "Via" not in bye.headers
    assert dialog.local_seq == 11


def test_new_request_carries_body_and_content_type() -> None:
    request = invite()
    dialog = Dialog.uac(request, answer(request))
    reinvite = dialog.new_request("INVITE", b"v=0\r\n", "application/sdp")
    assert reinvite.body == b"v=0\r\n"
    assert header(reinvite, "Content-Type") == "application/sdp"
    assert NameAddr.parse(header(reinvite, "Contact")).uri == "sip:alice@127.0.0.1:5070"
    assert "Contact" not in dialog.new_request("BYE").headers


def test_ack_and_cancel_do_not_increment_cseq() -> None:
    request = invite()
    dialog = Dialog.uac(request, answer(request))

    ack = dialog.ack(request)

    assert ack.method == "ACK"
    assert CSeq.parse(header(ack, "CSeq")) == CSeq(10, "ACK")
    assert ack.uri == "sip:bob@127.0.0.1:5080;transport=udp"
    assert header(ack, "Proxy-Authorization") == 'Digest username="alice"'
    assert dialog.local_seq == 10
    assert CSeq.parse(header(dialog.new_request("CANCEL"), "CSeq")).seq == 10
    assert CSeq.parse(header(dialog.new_request("INFO"), "CSeq")).seq == 11


def test_uas_dialog_keeps_record_route_order_and_starts_cseq() -> None:
    request = invite()
    dialog = Dialog.uas(request, local_tag="bob-tag")

    assert dialog.id == ("dialog-call@test", "bob-tag", "alice-tag")
    assert dialog.remote_seq == 10
    assert dialog.remote_target == "sip:alice@127.0.0.1:5070"
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]

    bye = dialog.new_request("BYE")

    assert bye.uri == "sip:alice@127.0.0.1:5070"
    assert CSeq.parse(header(bye, "CSeq")) == CSeq(1, "BYE")
    assert NameAddr.parse(header(bye, "From")).tag == "bob-tag"
    receiver = NameAddr.parse(header(bye, "To"))
    assert (receiver.tag, receiver.display) == ("alice-tag", "Alice")


def test_strict_route_goes_into_request_uri() -> None:
    request = invite()
    request.headers.set("Record-Route", "<sip:strict.example.com>")
    dialog = Dialog.uas(request, local_tag="bob-tag")

    bye = dialog.new_request("BYE")

    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:alice@127.0.0.1:5070>"]


def test_no_route_set_means_no_route_header() -> None:
    request = invite()
    request.headers.remove("Record-Route")
    dialog = Dialog.uas(request, local_tag="bob-tag")
    assert dialog.new_request("BYE").headers.get_all("Route") == []


def test_accept_remote_rejects_old_cseq() -> None:
    request = invite()
    dialog = Dialog.uas(request, local_tag="bob-tag")

    def incoming(method: str, seq: int) -> SipRequest:
        message = invite()
        message.method = method
        message.headers.set("CSeq", f"{seq} {method}")
        return message

    assert dialog.accept_remote(incoming("ACK", 10))
    assert not dialog.accept_remote(incoming("INFO", 10))
    assert not dialog.accept_remote(incoming("INFO", 9))
    assert dialog.accept_remote(incoming("INFO", 11))
    assert dialog.remote_seq == 11
    assert not dialog.accept_remote(incoming("BYE", 11))
    assert dialog.accept_remote(incoming("BYE", 500))
    assert not dialog.accept_remote(incoming("ACK", 501))


def test_uac_dialog_accepts_any_first_remote_cseq() -> None:
    request = invite()
    dialog = Dialog.uac(request, answer(request))
    bye = invite()
    bye.method = "BYE"
    bye.headers.set("CSeq", "1 BYE")
    assert dialog.accept_remote(bye)
    assert dialog.remote_seq == 1


def test_refresh_target_from_reinvite_and_its_2xx_only() -> None:
    request = invite()
    dialog = Dialog.uas(request, local_tag="bob-tag")

    info = invite()
    info.method = "INFO"
    info.headers.set("CSeq", "11 INFO")
    info.headers.set("Contact", "<sip:alice@10.0.0.1:5070>")
    assert not dialog.refresh_target(info)

    reinvite = invite()
    reinvite.headers.set("CSeq", "12 INVITE")
    reinvite.headers.set("Contact", "<sip:alice@10.0.0.2:5070>")
    assert dialog.refresh_target(reinvite)
    assert dialog.remote_target == "sip:alice@10.0.0.2:5070"

    uac = Dialog.uac(request, answer(request))
    outgoing = uac.new_request("INVITE")
    outgoing.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-re")
    busy = make_response(outgoing, 491, "Request Pending")
    busy.headers.add("Contact", "<sip:bob@10.9.9.9>")
    assert not uac.refresh_target(busy)
    ok = make_response(outgoing, 200, "OK")
    ok.headers.add("Contact", "<sip:bob@10.0.0.3:5080>")
    assert uac.refresh_target(ok)
    assert uac.remote_target == "sip:bob@10.0.0.3:5080"
    # The route set does not change on a target refresh.
    assert uac.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_dialog_ack_stops_2xx_retransmission_of_the_far_server() -> None:
    """End to end on two transaction layers: the UAC dialog's ACK ends the UAS retransmits."""
    caller, callee = TransactionLayer(), TransactionLayer()
    caller_peer, callee_peer = Peer("127.0.0.1", 5070), Peer("127.0.0.1", 5080)
    request = invite()

    [send] = caller.send_request(request, callee_peer, 0.0)
    assert isinstance(send, SendMessage)
    [received] = callee.receive(send.message, caller_peer, 0.01)
    assert isinstance(received, RequestReceived)
    uas = Dialog.uas(received.request, local_tag="bob-tag")
    ok = answer(received.request)
    [sent_ok] = callee.send_response(ok, 0.02)
    assert isinstance(sent_ok, SendMessage)
    assert isinstance(sent_ok.message, SipResponse)
    caller.receive(sent_ok.message, callee_peer, 0.03)

    uac = Dialog.uac(request, sent_ok.message)
    ack = uac.ack(request)
    ack.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={generate_branch()}", first=True)
    [ack_send] = caller.send_request(ack, callee_peer, 0.04)
    assert ack_send == SendMessage(ack, callee_peer)

    # One retransmission of the 2xx went out before the ACK arrived at 0.6.
    retransmitted = callee.poll(0.55)
    assert retransmitted == [SendMessage(ok, caller_peer)]
    assert callee.receive(ack, caller_peer, 0.6) == [RequestReceived(ack, caller_peer)]
    assert uas.accept_remote(ack)
    assert callee.poll(10.0) == []
