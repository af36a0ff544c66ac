"""The embedded defaults take real clients: one MD5 challenge, which SIPp's plain
`-au/-ap` (with `-auth_uri`) and baresip answer. The load-test scenarios of
docs/load-testing.md (`bench/sipp/`) run here as documented, bounded to 10 calls."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.message import SipResponse, parse_message
from testkit.baresip import Baresip, account
from testkit.harness import HOST, TRUNK_NUMBER, CallrecServer, free_port, make_server
from testkit.sipp_runner import SippResult, run_sipp

pytestmark = pytest.mark.e2e

BENCH_SIPP = Path(__file__).resolve().parents[2] / "bench" / "sipp"
USERS = [(str(extension), f"pw-{extension}") for extension in range(2001, 2011)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallrecServer]:
    srv = make_server(tmp_path_factory.mktemp("callrec"))  # no [sip] keys: the defaults
    assert "digest_algorithms" not in srv.config_path.read_text()
    for extension, password in USERS:
        srv.add_user(extension, f"Load {extension}", password)
    yield from srv.serving()


@pytest.fixture(scope="module")
def users_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The injection file of docs/load-testing.md: a user and its credentials per line."""
    path = tmp_path_factory.mktemp("users") / "users.csv"
    path.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{u};[authentication username={u} password={p}]\n" for u, p in USERS)
    )
    return path


def test_a_register_is_challenged_once_with_md5(server: CallrecServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"REGISTER sip:{server.sip_address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                f"From: <sip:2001@{server.sip_address}>;tag=1\r\n"
                f"To: <sip:2001@{server.sip_address}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:2001@{HOST}:{port}>\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, server.sip_port),
        )
        response = parse_message(sock.recv(65535))
    assert isinstance(response, SipResponse) and response.status == 401
    challenges = response.headers.get_all("WWW-Authenticate")
    assert len(challenges) == 1 and "algorithm=MD5" in challenges[0], challenges


def bench_sipp(
    scenario: str,
    server: CallrecServer,
    work_dir: Path,
    users_csv: Path,
    *,
    extra: tuple[str, ...] = (),
    timeout_s: float = 60.0,
    **options: object,
) -> SippResult:
    """One of bench/sipp/'s scenarios with the options docs/load-testing.md gives."""
    options.update(remote=server.sip_address, local_port=free_port())
    options["extra"] = ["-inf", str(users_csv), *extra]
    return run_sipp(str(BENCH_SIPP / scenario), work_dir=work_dir, timeout_s=timeout_s, **options)


def test_the_load_test_scenarios_register_and_call_against_the_defaults(
    server: CallrecServer, tmp_path: Path, users_csv: Path
) -> None:
    registered = bench_sipp(
        "register.xml", server, tmp_path / "register", users_csv, calls=10, rate=20
    )
    assert registered.ok and registered.successful_calls == 10, registered.summary()
    log = server.log()
    assert all(f"register {u} from" in log for u, _ in USERS)

    before = len(server.calls())
    trunk = server.start_sipp_trunk(tmp_path / "trunk", calls=10, timeout_s=60)
    calls = bench_sipp(
        "call.xml",
        server,
        tmp_path / "call",
        users_csv,
        calls=10,
        rate=5,
        max_concurrent=10,
        call_length_ms=2000,
        callee=TRUNK_NUMBER,
        media_port=free_port(even=True, span=4),
        timeout_s=60,
        extra=("-auth_uri", f"{TRUNK_NUMBER}@{server.sip_address}"),
    )
    assert calls.ok and calls.successful_calls == 10, calls.summary()
    assert trunk.wait().ok
    rows = server.wait_for_calls(before + 10)[:10]
    assert {row["disposition"] for row in rows} == {"answered"}
    assert {row["caller"]["extension"] for row in rows} == {u for u, _ in USERS}


def test_without_auth_uri_sipp_is_refused_as_documented(
    server: CallrecServer, tmp_path: Path, users_csv: Path
) -> None:
    before = len(server.calls())
    result = bench_sipp(
        "call.xml",
        server,
        tmp_path / "call",
        users_csv,
        calls=1,
        callee=TRUNK_NUMBER,
        media_port=free_port(even=True, span=4),
        timeout_s=10,
    )
    assert not result.ok and result.successful_calls == 0
    assert "is not the request-URI" in server.log()
    assert len(server.calls()) == before


def test_plain_au_ap_calls_against_the_defaults(server: CallrecServer, tmp_path: Path) -> None:
    trunk = server.start_sipp_trunk(tmp_path / "trunk", calls=10, timeout_s=60)
    user, password = USERS[0]
    phone = server.run_sipp_phone(  # testkit/sipp/uac_auth_pcap.xml: -au/-ap, -auth_uri
        tmp_path / "phone",
        caller=user,
        password=password,
        local_port=free_port(),
        calls=10,
        rate=5,
        call_length_ms=1000,
        timeout_s=60,
    )
    assert phone.ok and phone.successful_calls == 10, phone.summary()
    assert trunk.wait().ok


def test_baresip_registers_and_calls_with_the_defaults(
    server: CallrecServer, tmp_path: Path
) -> None:
    before = len(server.calls())
    trunk = server.start_sipp_trunk(tmp_path / "trunk", timeout_s=30)
    user, password = USERS[1]
    phone = Baresip(
        tmp_path,
        account=account(user, password, HOST, server.sip_port),
        commands=[f"/dial {TRUNK_NUMBER}"],
        time_limit_s=4,
    )
    phone.run_call("udp")
    assert trunk.wait().ok
    cdr = server.wait_for_calls(before + 1)[0]
    assert (cdr["caller"]["extension"], cdr["disposition"]) == (user, "answered")
