"""`[storage] db`: a SQLite file in the data folder, or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import ConfigError, load_config


def config_with(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(f'[storage]\ndir = "{tmp_path}/data"\n{storage}')
    return path


def test_the_default_is_a_sqlite_file_in_the_data_folder(tmp_path: Path) -> None:
    storage = load_config(config_with(tmp_path, "")).storage
    assert storage.database == tmp_path / "data" / "callrec.db"


def test_a_postgresql_url_names_the_shared_database_and_is_not_in_repr(tmp_path: Path) -> None:
    url = "postgresql://callrec:s3cret@db.example:5432/callrec"
    storage = load_config(config_with(tmp_path, f'db = "{url}"\n')).storage
    assert storage.database == url
    assert "s3cret" not in repr(storage)


@pytest.mark.parametrize(
    "value",
    ["postgresql://db.example", "postgresql:///callrec", "mysql://db.example/callrec", ""],
)
def test_a_url_without_host_or_database_or_of_another_kind_is_refused(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[storage\] db"):
        load_config(config_with(tmp_path, f'db = "{value}"\n'))
