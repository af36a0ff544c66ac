"""`[server] loop`: which event loop `callrec serve` runs on."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvloop

from callrec.config import ConfigError, event_loop_factory, load_config


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(text)
    return path


def test_loop_defaults_to_auto(tmp_path: Path) -> None:
    assert load_config(config_with(tmp_path, "")).server.loop == "auto"
    assert load_config(None).server.loop == "auto"


def test_loop_is_one_of_three(tmp_path: Path) -> None:
    path = config_with(tmp_path, '[server]\nloop = "asyncio"\n')
    assert load_config(path).server.loop == "asyncio"
    with pytest.raises(ConfigError, match=r"\[server\] loop: expected 'auto' or 'uvloop'"):
        load_config(config_with(tmp_path, '[server]\nloop = "trio"\n'))


def test_auto_and_uvloop_pick_uvloop_where_installed() -> None:
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
