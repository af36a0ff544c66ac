"""The node-side pieces of the cluster, in this process: trust in a proxy's
X-Callrec-Source, JSON log lines with call_id, /healthz and the set-up histogram.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from b2bua.call import LEG_HEADERS
from b2bua.message import SipRequest, parse_message
from b2bua.peer import Peer
from b2bua.server import B2bua
from b2bua.services import Directory, MediaFactory
from callrec.config import ConfigError, load_config
from callrec.logs import CALL_ID, configure_logging
from portal.health import health_route, run_checks
from portal.metrics import SetupLatency

PROXY = Peer("127.0.0.10", 5060, "udp")


def _b2bua(proxies: tuple[str, ...]) -> B2bua:
    config = load_config(None)
    config = dataclasses.replace(config, sip=dataclasses.replace(config.sip, proxies=proxies))
    return B2bua(
        config,
        cast(Directory, object()),
        cast(MediaFactory, object()),
        spawn=lambda work: cast(Any, work.close()),
    )


def _request(source: str | None) -> SipRequest:
    header = f"X-Callrec-Source: {source}\r\n" if source is not None else ""
    message = parse_message(
        (
            "REGISTER sip:callrec SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK1\r\n"
            "From: <sip:100@callrec>;tag=1\r\nTo: <sip:100@callrec>\r\nCall-ID: a\r\n"
            f"CSeq: 1 REGISTER\r\n{header}Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


def test_source_named_by_a_trusted_proxy_is_believed() -> None:
    b2bua = _b2bua(("127.0.0.10",))
    source = b2bua.source_of(_request("192.0.2.7:5062;transport=udp"), PROXY)
    assert source == Peer("192.0.2.7", 5062, "udp")
    assert b2bua.source_of(_request("[2001:db8::1]:5070;transport=tcp"), PROXY) == Peer(
        "2001:db8::1", 5070, "tcp"
    )


def test_source_header_from_anyone_else_proves_nothing() -> None:
    phone = Peer("127.0.0.1", 5070, "udp")
    assert _b2bua(("127.0.0.10",)).source_of(_request("192.0.2.7:5062"), phone) == phone
    # No proxies configured: not even the proxy's address is believed.
    assert _b2bua(()).source_of(_request("192.0.2.7:5062"), PROXY) == PROXY


def test_proxy_without_or_with_a_bad_header_is_the_source() -> None:
    b2bua = _b2bua(("127.0.0.10",))
    assert b2bua.source_of(_request(None), PROXY) == PROXY
    assert b2bua.source_of(_request("not an address"), PROXY) == PROXY


def test_source_header_never_reaches_the_other_leg() -> None:
    assert "x-callrec-source" in LEG_HEADERS


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text('[sip]\nproxies = ["127.0.0.10"]\n[server]\nlog_format = "json"\n')
    config = load_config(path)
    assert config.sip.proxies == ("127.0.0.10",)
    assert config.server.log_format == "json"
    path.write_text('[sip]\nproxies = ["kamailio.example"]\n')
    with pytest.raises(ConfigError, match=r"\[sip\] proxies"):
        load_config(path)
    path.write_text('[server]\nlog_format = "xml"\n')
    with pytest.raises(ConfigError, match=r"\[server\] log_format"):
        load_config(path)


@pytest.fixture
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_json_lines_carry_the_call_id(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    log = logging.getLogger("callrec.test")
    log.info("outside any call")
    token = CALL_ID.set("abc@host")
    try:

        async def in_a_task() -> None:
            log.warning("inside: %s", "set-up")

        # A task started while a message is handled inherits its Call-ID.
        await asyncio.create_task(in_a_task())
        log.info("explicit", extra={"call_id": "other@host"})
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("failed")
    finally:
        CALL_ID.reset(token)
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(lines) == 4
    assert "call_id" not in events[0]
    assert events[1]["call_id"] == "abc@host" and events[1]["message"] == "inside: set-up"
    assert events[1]["level"] == "WARNING" and events[1]["logger"] == "callrec.test"
    assert events[2]["call_id"] == "other@host"
    assert "line two" in events[3]["exc"]


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[str, dict[str, bool]]]:
    state = {"objects": True}

    async def store() -> None:
        return None

    async def objects() -> None:
        if not state["objects"]:
            raise ConnectionRefusedError("s3 at /secret/path refused")

    app = web.Application()
    app.add_routes([health_route({"store": store, "objects": objects})])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/healthz", state
    finally:
        await runner.cleanup()


async def test_healthz_answers_200_then_503(health_server: tuple[str, dict[str, bool]]) -> None:
    url, state = health_server
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "ok" and body["checks"]["objects"]["ok"] is True
        state["objects"] = False
        async with session.get(url) as response:
            assert response.status == 503
            text = await response.text()
        body = json.loads(text)
        assert body["status"] == "failing"
        assert body["checks"]["objects"] == {"ok": False, "error": "ConnectionRefusedError"}
        assert body["checks"]["store"]["ok"] is True
        assert "/secret/path" not in text


async def test_a_check_that_hangs_fails_within_the_timeout() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    results = await run_checks({"store": hangs}, timeout=0.05)
    assert results["store"]["ok"] is False and results["store"]["error"] == "TimeoutError"


def test_setup_histogram_is_cumulative() -> None:
    latency = SetupLatency(buckets=(0.5, 1.0))
    for seconds in (0.1, 0.5, 0.7, 3.0):
        latency.observe(seconds)
    assert latency.cumulative() == [("0.5", 2), ("1.0", 3), ("+Inf", 4)]
    assert latency.total == pytest.approx(4.3)
