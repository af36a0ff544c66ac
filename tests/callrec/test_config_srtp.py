"""`[trunk] srtp`: what callrec offers the trunk (off, offer, require)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import ConfigError, load_config


def test_srtp_toward_the_trunk_is_off_by_default() -> None:
    assert load_config(None).trunk.srtp == "off"


@pytest.mark.parametrize("mode", ["off", "offer", "require"])
def test_each_mode_is_taken(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text(f'[trunk]\nsrtp = "{mode}"\n')
    assert load_config(path).trunk.srtp == mode


@pytest.mark.parametrize("value", ['"on"', "true", '"REQUIRE"'])
def test_anything_else_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text(f"[trunk]\nsrtp = {value}\n")
    with pytest.raises(
        ConfigError, match=r"\[trunk\] srtp: expected 'off' or 'offer' or 'require'"
    ):
        load_config(path)
