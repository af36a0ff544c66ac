"""End-to-end: two organisations on one real `callrec serve`, with the same extension
numbers. Each phone registers under its organisation's SIP domain (the digest realm of
its challenge), calls out with it, and is rung by the trunk through its organisation's
DID; calls and recordings stay with their organisation (CLI with `--org`), and a phone
of one organisation cannot authenticate with the other's domain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from b2bua.message import SipResponse
from testkit.harness import CallrecServer, free_port, make_server
from testkit.sip_register import register as register_udp
from testkit.sipp_runner import SippProcess, start_sipp
from testkit.waiting import wait_until

pytestmark = pytest.mark.e2e

UAC_DOMAIN = str(Path(__file__).parent / "sipp" / "uac_domain_pcap.xml")


@dataclass(frozen=True)
class Org:
    slug: str
    domain: str
    did: str
    name: str  # of its user 201
    password: str


ACME = Org("acme", "acme.example", "31100201", "Anna Acme", "pw-acme-201")
BETA = Org("beta", "beta.example", "31200201", "Bert Beta", "pw-beta-201")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"), sipp=True)
    for org in (ACME, BETA):
        srv.cli("orgs", "add", org.slug, "--name", org.slug.title(), "--domain", org.domain)
        srv.add_user("201", org.name, org.password, "--org", org.slug, "--mode", "always")
        srv.cli("dids", "add", "--org", org.slug, org.did, "--extension", "201")
    yield from srv.serving()


def calls_of(server: CallrecServer, org: Org) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        server.cli("calls", "list", "--org", org.slug, "--json").stdout
    )
    return rows


def recordings_of(server: CallrecServer, org: Org) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        server.cli("recordings", "list", "--org", org.slug, "--json").stdout
    )
    return rows


def register(
    server: CallrecServer, org: Org, *, password: str | None = None, domain: str | None = None
) -> tuple[int, SipResponse, str]:
    """REGISTER 201@domain from a fresh UDP port with digest: (the port, the final
    response, the realm challenged with). The port is free again afterwards."""
    done = register_udp(server.sip_port, "201", password or org.password, domain or org.domain)
    return done.port, done.response, done.realm


def answering_phone(work_dir: Path, port: int) -> SippProcess:
    """SIPp answering (and echoing) one call on the port a phone registered from."""
    return start_sipp(
        "uas_echo.xml",
        work_dir=work_dir,
        timeout_s=60,
        local_port=port,
        media_port=free_port(even=True, span=4),
        rtp_echo=True,
    )


def test_each_organisation_registers_under_its_own_domain(server: CallrecServer) -> None:
    for org in (ACME, BETA):
        _, response, realm = register(server, org)
        assert response.status == 200, response.status
        assert realm == org.domain  # the organisation's domain is its digest realm
    # Beta's password under Acme's domain proves nothing there.
    _, refused, _ = register(server, ACME, password=BETA.password)
    assert refused.status == 401
    # A domain no organisation has is refused outright.
    _, unknown, _ = register(server, ACME, domain="nobody.example")
    assert unknown.status == 404


def test_same_extension_in_two_organisations_calls_out_and_is_rung_through_its_did(
    server: CallrecServer, tmp_path: Path
) -> None:
    # Out: each organisation's 201 calls the trunk with its own domain.
    for org in (ACME, BETA):
        trunk = server.start_sipp_trunk(tmp_path / f"trunk-{org.slug}")
        phone = start_sipp(
            UAC_DOMAIN,
            work_dir=tmp_path / f"out-{org.slug}",
            timeout_s=60,
            ready_wait_s=0,
            remote=server.sip_address,
            local_port=free_port(),
            media_port=free_port(even=True, span=4),
            callee="300",
            caller="201",
            user="201",
            password=org.password,
            call_length_ms=1500,
            keys={"domain": org.domain},
            extra=["-auth_uri", f"300@{server.sip_address}"],
        ).wait()
        assert phone.ok, phone.summary()
        assert trunk.wait().ok
    # In: both phones registered; the trunk calls each organisation's DID.
    phones = {}
    for org in (ACME, BETA):
        port, response, _ = register(server, org)
        assert response.status == 200
        phones[org.slug] = answering_phone(tmp_path / f"phone-{org.slug}", port)
    try:
        for org in (ACME, BETA):
            result = server.run_sipp_from_trunk(
                tmp_path / f"in-{org.slug}", callee=org.did, caller="0612345678",
                call_length_ms=1500,
            )  # fmt: skip
            assert result.ok, result.summary()
            # The call reached this organisation's phone: its SIPp took its one call.
            assert phones[org.slug].wait().ok, org.slug
    finally:
        for phone in phones.values():
            phone.stop(grace_s=1.0)

    # Each organisation sees its own two calls, named for its own user, and nothing else.
    for org, other in ((ACME, BETA), (BETA, ACME)):
        rows = wait_until(
            lambda org=org: (
                (found := calls_of(server, org))  # type: ignore[misc]
                and len([r for r in found if r.get("ended_at")]) >= 2
                and found
            ),
            timeout=15,
            what=f"{org.slug}'s calls",
            interval=0.2,
        )
        assert len(rows) == 2, rows
        assert {row["direction"] for row in rows} == {"inbound", "outbound"}
        names = {row["caller"]["name"] for row in rows} | {row["callee"]["name"] for row in rows}
        assert org.name in names and other.name not in names
        recordings = wait_until(
            lambda org=org: (
                (found := recordings_of(server, org))  # type: ignore[misc]
                and all(r["status"] != "recording" for r in found)
                and len(found) >= 2
                and found
            ),
            timeout=15,
            what=f"{org.slug}'s recordings",
            interval=0.2,
        )
        assert {r["call_id"] for r in recordings} == {row["id"] for row in rows}
        assert all(r["status"] == "complete" for r in recordings), recordings
    # A number no organisation has rings nobody.
    stray = server.run_sipp_from_trunk(
        tmp_path / "stray", callee="31999999", caller="0612345678", call_length_ms=500
    )
    assert not stray.ok
    # The default organisation (migrated, empty) has no calls at all.
    assert calls_of(server, Org("default", "", "", "", "")) == []
