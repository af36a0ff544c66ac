"""Tests for b2bua.registrar: RFC 3261 §10.3 on a fake clock."""

from __future__ import annotations

import email.utils

import pytest

from b2bua.message import SipRequest, SipResponse, parse_message
from b2bua.peer import Peer
from b2bua.registrar import (
    Binding,
    BindingChange,
    RegisterOutcome,
    Registrar,
    Remove,
    RemoveAll,
    Upsert,
    format_received,
    parse_received,
)

T0 = 1_700_000_000.0
DESK = Peer("127.0.0.1", 40001)
MOBILE = Peer("127.0.0.1", 40002, "tcp")
DESK_CONTACT = "sip:100@192.168.1.10:5060"
MOBILE_CONTACT = "sip:alice-mobile@10.0.0.7:5080;transport=tcp"


def register_request(
    contacts: list[str],
    *,
    expires: str | None = None,
    call_id: str = "desk-call-id",
    cseq: int = 1,
    to_user: str = "100",
) -> SipRequest:
    lines = [
        "REGISTER sip:callrec.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK-reg-1;rport",
        "Max-Forwards: 70",
        f"From: <sip:{to_user}@callrec.test>;tag=reg1",
        f"To: <sip:{to_user}@callrec.test>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {contact}" for contact in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += ["Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, SipRequest)
    return message


def run(
    request: SipRequest,
    bindings: list[Binding],
    *,
    now: float = T0,
    peer: Peer = DESK,
    registrar: Registrar | None = None,
) -> RegisterOutcome:
    return (registrar or Registrar()).register(
        request,
        peer,
        now,
        extension="100",
        allowed_aors={"alice-mobile"},
        bindings=bindings,
        to_tag="regtag",
    )


def apply(bindings: list[Binding], changes: list[BindingChange]) -> list[Binding]:
    """What a store does with the changes (kept independent of the registrar's own)."""
    by_contact = {binding.contact: binding for binding in bindings}
    for change in changes:
        if isinstance(change, RemoveAll):
            by_contact.clear()
        elif isinstance(change, Remove):
            by_contact.pop(change.contact, None)
        else:
            by_contact[change.contact] = Binding(
                change.contact, change.expires_at, change.call_id, change.cseq, change.received
            )
    return list(by_contact.values())


def listed_contacts(response: SipResponse) -> dict[str, int]:
    result: dict[str, int] = {}
    for value in response.headers.get_all("Contact"):
        uri, _, params = value.partition(">;expires=")
        result[uri.lstrip("<")] = int(params)
    return result


def test_first_registration_default_expiry() -> None:
    outcome = run(register_request([f"<{DESK_CONTACT}>"]), [])
    assert outcome.response.status == 200
    assert outcome.changes == [
        Upsert(DESK_CONTACT, T0 + 3600, "desk-call-id", 1, format_received(DESK))
    ]
    assert listed_contacts(outcome.response) == {DESK_CONTACT: 3600}
    to = outcome.response.headers.get("To")
    assert to is not None and "tag=regtag" in to
    date = outcome.response.headers.get("Date")
    assert date is not None and email.utils.parsedate_to_datetime(date).timestamp() == T0


def test_expires_header_and_contact_param_precedence_and_clamp() -> None:
    request = register_request(
        [f"<{DESK_CONTACT}>;expires=120", f"<{MOBILE_CONTACT}>"], expires="7200"
    )
    outcome = run(request, [])
    assert outcome.response.status == 200
    assert listed_contacts(outcome.response) == {DESK_CONTACT: 120, MOBILE_CONTACT: 3600}
    expiries = {c.contact: c.expires_at for c in outcome.changes if isinstance(c, Upsert)}
    assert expiries == {DESK_CONTACT: T0 + 120, MOBILE_CONTACT: T0 + 3600}


def test_refresh_then_expiry_on_fake_clock() -> None:
    first = run(register_request([f"<{DESK_CONTACT}>"], expires="300"), [])
    bindings = apply([], first.changes)
    # Refresh 200 s later with a higher CSeq: the binding is pushed forward.
    refresh = run(
        register_request([f"<{DESK_CONTACT}>"], expires="300", cseq=2), bindings, now=T0 + 200
    )
    assert refresh.response.status == 200
    bindings = apply(bindings, refresh.changes)
    assert [b.expires_at for b in bindings] == [T0 + 500]
    # A fetch after the binding lapsed lists nothing.
    fetch = run(register_request([]), bindings, now=T0 + 501)
    assert fetch.response.status == 200
    assert fetch.changes == []
    assert fetch.response.headers.get_all("Contact") == []
    # A fetch before shows the remaining time.
    fetch = run(register_request([]), bindings, now=T0 + 400)
    assert listed_contacts(fetch.response) == {DESK_CONTACT: 100}


def test_remove_one_contact_with_expires_zero() -> None:
    bindings = apply([], run(register_request([f"<{DESK_CONTACT}>"]), []).changes)
    outcome = run(register_request([f"<{DESK_CONTACT}>;expires=0"], cseq=2), bindings)
    assert outcome.response.status == 200
    assert outcome.changes == [Remove(DESK_CONTACT)]
    assert outcome.response.headers.get_all("Contact") == []
    # Removing a contact that is not bound is a no-op, not an error.
    outcome = run(register_request([f"<{DESK_CONTACT}>"], expires="0", cseq=3), [])
    assert (outcome.response.status, outcome.changes) == (200, [])


def test_multiple_devices_coexist_and_wildcard_removes_all() -> None:
    desk = run(register_request([f"<{DESK_CONTACT}>"]), [])
    bindings = apply([], desk.changes)
    mobile = run(
        register_request([f"<{MOBILE_CONTACT}>"], call_id="mobile-call-id", to_user="alice-mobile"),
        bindings,
        now=T0 + 10,
        peer=MOBILE,
    )
    assert mobile.response.status == 200
    bindings = apply(bindings, mobile.changes)
    assert listed_contacts(mobile.response) == {DESK_CONTACT: 3590, MOBILE_CONTACT: 3600}
    assert {b.contact: b.destination() for b in bindings} == {
        DESK_CONTACT: DESK,
        MOBILE_CONTACT: MOBILE,
    }

    wipe = run(register_request(["*"], expires="0", cseq=2), bindings, now=T0 + 20)
    assert wipe.response.status == 200
    assert wipe.changes == [RemoveAll()]
    assert wipe.response.headers.get_all("Contact") == []
    assert apply(bindings, wipe.changes) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(["*"], None), (["*"], "60"), (["*", f"<{DESK_CONTACT}>"], "0")],
)
def test_bad_wildcard(contacts: list[str], expires: str | None) -> None:
    outcome = run(register_request(contacts, expires=expires), [])
    assert (outcome.response.status, outcome.changes) == (400, [])


def test_interval_too_brief() -> None:
    outcome = run(register_request([f"<{DESK_CONTACT}>"], expires="30"), [])
    assert outcome.response.status == 423
    assert outcome.response.headers.get("Min-Expires") == "60"
    assert outcome.changes == []
    # The whole request fails if any one contact asks for too little.
    outcome = run(register_request([f"<{MOBILE_CONTACT}>", f"<{DESK_CONTACT}>;expires=59"]), [])
    assert (outcome.response.status, outcome.changes) == (423, [])
    outcome = run(
        register_request([f"<{DESK_CONTACT}>"], expires="30"),
        [],
        registrar=Registrar(min_expires=20),
    )
    assert outcome.response.status == 200


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        ([f"<{DESK_CONTACT}>"], "soon"),
        ([f"<{DESK_CONTACT}>"], "-5"),
        ([f"<{DESK_CONTACT}>;expires=abc"], None),
        (["<http://example.com/phone>"], None),
    ],
)
def test_bad_expires_or_contact(contacts: list[str], expires: str | None) -> None:
    outcome = run(register_request(contacts, expires=expires), [])
    assert (outcome.response.status, outcome.changes) == (400, [])


@pytest.mark.parametrize("cseq", [1, 5])
def test_out_of_order_cseq_same_call_id(cseq: int) -> None:
    bindings = [Binding(DESK_CONTACT, T0 + 3000, "desk-call-id", 5, format_received(DESK))]
    outcome = run(register_request([f"<{DESK_CONTACT}>"], cseq=cseq), bindings)
    assert (outcome.response.status, outcome.changes) == (500, [])
    wipe = run(register_request(["*"], expires="0", cseq=cseq), bindings)
    assert (wipe.response.status, wipe.changes) == (500, [])


def test_lower_cseq_with_new_call_id_is_accepted() -> None:
    """A rebooted phone starts a new Call-ID at CSeq 1 and must be able to re-register."""
    bindings = [Binding(DESK_CONTACT, T0 + 3000, "old-call-id", 9, format_received(DESK))]
    outcome = run(register_request([f"<{DESK_CONTACT}>"], cseq=1), bindings)
    assert outcome.response.status == 200
    assert outcome.changes == [
        Upsert(DESK_CONTACT, T0 + 3600, "desk-call-id", 1, format_received(DESK))
    ]


def test_foreign_aor_forbidden() -> None:
    outcome = run(register_request([f"<{DESK_CONTACT}>"], to_user="200"), [])
    assert (outcome.response.status, outcome.changes) == (403, [])


def test_nat_source_recorded_over_contact_host() -> None:
    behind_nat = Peer("127.0.0.1", 61234)
    outcome = run(register_request([f"<{DESK_CONTACT}>"]), [], peer=behind_nat)
    (binding,) = apply([], outcome.changes)
    assert binding.contact == DESK_CONTACT
    assert binding.destination() == behind_nat


@pytest.mark.parametrize(
    "peer", [Peer("127.0.0.1", 5060), Peer("::1", 5062, "tcp"), Peer("localhost", 1)]
)
def test_received_round_trip(peer: Peer) -> None:
    assert parse_received(format_received(peer)) == peer


@pytest.mark.parametrize("text", ["", "127.0.0.1", "[::1]5060", "host:port"])
def test_parse_received_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_received(text)


def test_not_a_register() -> None:
    request = register_request([f"<{DESK_CONTACT}>"])
    request.method = "INVITE"
    with pytest.raises(ValueError):
        run(request, [])


# -- contacts per user ------------------------------------------------------------------


def phones(count: int, start: int = 0) -> list[str]:
    return [f"<sip:100@192.168.1.{start + i + 1}:5060>" for i in range(count)]


def test_contacts_per_user_are_capped_with_a_403_and_a_warning() -> None:
    registrar = Registrar(max_contacts=10)
    bindings: list[Binding] = []
    for i, contact in enumerate(phones(10)):
        outcome = run(
            register_request([contact], call_id=f"phone-{i}"), bindings, registrar=registrar
        )
        assert outcome.response.status == 200, i
        bindings = apply(bindings, outcome.changes)
    assert len(bindings) == 10
    eleventh = run(
        register_request(phones(1, start=10), call_id="phone-10"), bindings, registrar=registrar
    )
    assert (eleventh.response.status, eleventh.response.reason) == (403, "Too many registrations")
    assert eleventh.changes == []
    warning = eleventh.response.headers.get("Warning")
    assert warning is not None and warning.startswith('399 callrec "at most 10 contacts per user')
    # Refreshing, replacing and removing bound contacts is still allowed at the cap.
    refresh = run(
        register_request(phones(1), call_id="phone-0", cseq=2), bindings, registrar=registrar
    )
    assert refresh.response.status == 200
    swap = run(
        register_request([phones(1)[0] + ";expires=0", phones(1, start=10)[0]], call_id="x"),
        bindings,
        registrar=registrar,
    )
    assert swap.response.status == 200
    assert len(apply(bindings, swap.changes)) == 10


def test_one_register_with_too_many_contacts_is_refused_whole() -> None:
    outcome = run(register_request(phones(11)), [], registrar=Registrar(max_contacts=10))
    assert outcome.response.status == 403 and outcome.changes == []
    assert run(register_request(phones(10)), [], registrar=Registrar(max_contacts=10)).changes


def test_expired_bindings_do_not_count_toward_the_cap() -> None:
    old = [
        Binding(f"sip:100@10.0.0.{i}", T0 - 1, f"old-{i}", 1, "10.0.0.9:5060") for i in range(10)
    ]
    outcome = run(register_request(phones(3)), old, registrar=Registrar(max_contacts=3))
    assert outcome.response.status == 200


def test_bindings_stored_above_the_cap_can_still_be_refreshed() -> None:
    stored = [
        Binding(f"sip:100@10.0.0.{i}:5060", T0 + 100, f"c{i}", 1, "10.0.0.9:5060;transport=udp")
        for i in range(15)
    ]
    registrar = Registrar(max_contacts=10)
    refresh = run(
        register_request(["<sip:100@10.0.0.3:5060>"], call_id="c3", cseq=2),
        stored,
        registrar=registrar,
    )
    assert refresh.response.status == 200
    more = run(register_request(phones(1)), stored, registrar=registrar)
    assert more.response.status == 403


def test_max_contacts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Registrar(max_contacts=0)
