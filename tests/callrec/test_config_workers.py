"""`[media] workers` (media worker processes) and `[portal] metrics` in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import ConfigError, load_config


def test_workers_default_to_one_per_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    config = load_config(None)
    assert config.media.workers == 6
    assert config.portal.metrics is False


def test_the_default_is_capped_by_what_the_port_range_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    path = tmp_path / "callrec.toml"
    path.write_text('[media]\nrtp_ports = "20000-20019"\n')  # ten pairs: five workers
    assert load_config(path).media.workers == 5


def test_workers_and_metrics_are_read(tmp_path: Path) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text("[media]\nworkers = 3\n[portal]\nmetrics = true\n")
    config = load_config(path)
    assert config.media.workers == 3
    assert config.portal.metrics is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[media]\nworkers = 0\n", "[media] workers: expected an integer 1-256, got 0"),
        ('[media]\nworkers = "2"\n', "[media] workers: expected an integer 1-256, got '2'"),
        (
            '[media]\nworkers = 3\nrtp_ports = "20000-20009"\n',
            "[media] workers: 3 workers need at least 12 RTP ports (two pairs each);"
            " rtp_ports 20000-20009 holds 5 pair(s)",
        ),
        ("[portal]\nmetrics = 1\n", "[portal] metrics: expected true or false, got 1"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "callrec.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"config error: {message}"
