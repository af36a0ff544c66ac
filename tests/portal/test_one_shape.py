"""The API and the CLI show the same records in the same shape, and refuse the same
settings with the same sentence (one serialiser, one rule)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from callrec.policy import FeatureCode, PolicyError
from tests.portal.conftest import Client, Fixture
from tests.storage.orgs import ORG

API = "/api/v1"
LINKS = ("audio_url", "download_url")


async def cli(tmp_path: Path, portal: Fixture, *argv: str) -> tuple[int, str, str]:
    """The real `python -m callrec` on the portal's store."""
    config = tmp_path / "cli.toml"
    config.write_text(f"[storage]\ndir = '{portal.storage_dir}'\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrec", *argv, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def api_get(admin: Client, portal: Fixture, path: str) -> Any:
    async with admin.session.get(portal.url + API + path) as response:
        assert response.status == 200
        return await response.json()


async def test_recordings_calls_and_users_have_one_shape(
    portal: Fixture, admin: Client, tmp_path: Path
) -> None:
    code, out, err = await cli(tmp_path, portal, "recordings", "list", "--json")
    assert (code, err) == (0, "")
    from_cli = json.loads(out)
    from_api = (await api_get(admin, portal, "/recordings?page_size=200"))["items"]
    assert len(from_cli) == len(from_api) >= 2
    for shown_by_cli, shown_by_api in zip(from_cli, from_api, strict=True):
        assert shown_by_cli == {k: v for k, v in shown_by_api.items() if k not in LINKS}
        assert set(shown_by_cli["call"]["caller"]) == {"extension", "name"}

    code, out, err = await cli(tmp_path, portal, "calls", "list", "--json")
    assert (code, err) == (0, "")
    calls_by_cli = {call["id"]: call for call in json.loads(out)}
    calls_by_api = (await api_get(admin, portal, "/calls?page_size=200"))["items"]
    assert set(calls_by_cli) == {call["id"] for call in calls_by_api}
    for shown_by_api in calls_by_api:
        # The API adds the call's recordings; the record itself reads the same.
        without = {k: v for k, v in shown_by_api.items() if k != "recordings"}
        assert calls_by_cli[shown_by_api["id"]] == without

    code, out, err = await cli(tmp_path, portal, "users", "list", "--json")
    assert (code, err) == (0, "")
    users_by_cli = json.loads(out)
    users_by_api = (await api_get(admin, portal, "/users"))["items"]
    assert [{k: v for k, v in u.items() if k != "devices"} for u in users_by_cli] == users_by_api
    assert [u["recording_mode"] for u in users_by_api] == ["always", "on-demand", "never"]


@pytest.mark.parametrize("code", ["#5", "*12", "5", "*"])
async def test_a_bad_feature_code_is_refused_alike_by_api_and_cli(
    portal: Fixture, admin: Client, tmp_path: Path, code: str
) -> None:
    with pytest.raises(PolicyError) as rule:
        FeatureCode.parse(code)
    async with admin.session.patch(
        portal.url + API + "/settings", json={"feature_code": code}, headers=admin.headers
    ) as response:
        assert response.status == 422
        answer = await response.json()
    assert (answer["field"], answer["error"]) == ("feature_code", str(rule.value))
    status, out, err = await cli(tmp_path, portal, "settings", "set", "feature_code", code)
    assert (status, out) == (1, "")
    assert err == f"callrec: error: feature_code: {rule.value}\n"
    assert "feature_code" not in await portal.store.org_settings(ORG)
