"""[storage] keys of the object store: checked at load, the secret kept out of repr()."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from callrec.config import Config, ConfigError, load_config
from storage.files import RecordingFiles


def test_defaults_keep_recordings_in_the_local_folder(tmp_path: Path) -> None:
    config = load_config(None)
    assert config.storage.objects is None and config.storage.upload_queue_alarm == 100
    assert RecordingFiles.from_config(config.storage).remote is False


def test_an_s3_url_with_its_endpoint_and_keys(tmp_path: Path) -> None:
    if importlib.util.find_spec("aiobotocore") is None:
        pytest.skip("aiobotocore is not installed: pip install -e '.[cluster]'")
    config = load_config_text(
        tmp_path,
        'objects = "s3://call-rec/node-1"\ns3_endpoint = "http://127.0.0.1:8333"\n'
        's3_access_key = "key"\ns3_secret_key = "very-secret-value"\n'
        "upload_queue_alarm = 5\nupload_retry_max = 10\n",
    )
    storage = config.storage
    assert (storage.objects, storage.upload_queue_alarm, storage.upload_retry_max) == (
        "s3://call-rec/node-1",
        5,
        10.0,
    )
    assert "very-secret-value" not in repr(config)
    files = RecordingFiles.from_config(storage)
    assert files.objects is not None and files.objects.settings.prefix == "node-1/"
    assert files.objects.settings.key("recordings/a.wav") == "node-1/recordings/a.wav"
    assert "very-secret-value" not in repr(files.objects)


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ('objects = "/var/recordings"', "[storage] objects: expected 's3://BUCKET[/PREFIX]'"),
        ('objects = "s3://Upper"', "[storage] objects:"),
        ('objects = "s3://bucket/../x"', "[storage] objects:"),
        ('s3_endpoint = "ftp://x"', "[storage] s3_endpoint:"),
        ("upload_queue_alarm = 0", "[storage] upload_queue_alarm:"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, storage: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(tmp_path, storage + "\n")
    assert message in str(caught.value)


def load_config_text(tmp_path: Path, storage: str) -> Config:
    source = tmp_path / "callrec.toml"
    source.write_text(f"[storage]\ndir = 'data'\n{storage}", encoding="utf-8")
    return load_config(source)
