"""TOML configuration: defaults, parsing and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.config import ConfigError, HostPort, load_config, parse_host_port
from callrec.policy import FeatureCode

CODE_RULE = "the feature code must be * followed by one digit 0-9"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callrec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.source is None
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    assert (config.sip.realm, config.sip.user_agent) == ("callrec", "callrec")
    assert (config.sip.nonce_lifetime, config.sip.max_contacts) == (60.0, 10)
    assert (config.sip.auth_max_failures, config.sip.auth_failure_window) == (10, 60.0)
    assert config.sip.auth_lockout == 300.0
    assert (config.trunk.host, config.trunk.port, config.trunk.transport) == (
        "127.0.0.1",
        5080,
        "udp",
    )
    # the trunk itself is matched by host and port; `trusted` only adds whole hosts
    assert config.trunk.trusted == ()
    assert (config.trunk.identity, config.trunk.from_domain) == ("from", None)
    assert config.media.address == "127.0.0.1"
    assert (config.media.rtp_port_first, config.media.rtp_port_last) == (20000, 29999)
    assert config.media.rtp_timeout == 30.0
    assert config.media.hangup_after_silence == 120.0
    assert (config.media.nat, config.media.latch_window) == (True, 3.0)
    assert (config.recording.channels, config.recording.format) == ("mono", "wav")
    assert (config.recording.feature_code.text, config.recording.announcement) == ("*1", "default")
    assert config.recording.announcement_path is None
    assert config.storage.dir == tmp_path.resolve() / "callrec-data"
    assert config.storage.db_path == tmp_path.resolve() / "callrec-data" / "callrec.db"
    assert config.retention.default_days == 90
    assert config.portal.listen == HostPort("127.0.0.1", 8080)
    assert (config.smtp.host, config.smtp.port, config.smtp.sender) == (
        "127.0.0.1",
        25,
        "callrec@localhost",
    )


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    assert config.storage.dir == tmp_path.resolve() / "callrec-data"
    assert config.source == (tmp_path / "callrec.toml").resolve()


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "notice.wav").write_bytes(b"RIFF")
    config = load_config(
        write(
            tmp_path,
            """
[sip]
listen = "[::1]:5070"
realm = "office"
user_agent = "callrec test"
nonce_lifetime = 30
auth_max_failures = 5
auth_failure_window = 120
auth_lockout = 900
max_contacts = 3

[trunk]
uri = "sip:trunk@127.0.0.2:5090;transport=tcp"
trusted = ["127.0.0.2", "::1"]

[media]
address = "127.0.0.1"
rtp_ports = "30000-30099"
rtp_timeout = 5
hangup_after_silence = 0
nat = false
latch_window = 1.5

[recording]
channels = "stereo"
format = "flac"
feature_code = " *9 "
announcement = "prompts/notice.wav"

[storage]
dir = "data"
db = "meta.sqlite"

[retention]
default_days = 365

[portal]
listen = "localhost:8443"

[smtp]
host = "mail.example.org"
port = 587
sender = "recorder@example.org"
""",
        )
    )
    assert config.sip.listen == HostPort("::1", 5070)
    assert str(config.sip.listen) == "[::1]:5070"
    assert config.sip.realm == "office"
    assert (config.sip.nonce_lifetime, config.sip.auth_max_failures) == (30.0, 5)
    assert (config.sip.auth_failure_window, config.sip.auth_lockout) == (120.0, 900.0)
    assert config.sip.max_contacts == 3
    assert config.trunk.uri == "sip:trunk@127.0.0.2:5090;transport=tcp"
    assert (config.trunk.host, config.trunk.port, config.trunk.transport) == (
        "127.0.0.2",
        5090,
        "tcp",
    )
    assert config.trunk.trusted == ("127.0.0.2", "::1")
    assert (config.media.rtp_port_first, config.media.rtp_port_last) == (30000, 30099)
    assert config.media.rtp_timeout == 5.0 and isinstance(config.media.rtp_timeout, float)
    assert config.media.hangup_after_silence == 0.0  # never
    assert (config.media.nat, config.media.latch_window) == (False, 1.5)
    assert (config.recording.channels, config.recording.format) == ("stereo", "flac")
    assert config.recording.feature_code == FeatureCode("9")
    assert config.recording.announcement_path == (tmp_path / "prompts" / "notice.wav").resolve()
    assert config.storage.db_path == (tmp_path / "data" / "meta.sqlite").resolve()
    assert config.retention.default_days == 365
    assert config.portal.listen == HostPort("localhost", 8443)
    assert (config.smtp.host, config.smtp.port) == ("mail.example.org", 587)


def test_trunk_ipv6_uri_and_empty_trusted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[trunk]\nuri = "sip:[::1]"\ntrusted = []\n'))
    assert (config.trunk.host, config.trunk.port) == ("::1", 5060)
    assert config.trunk.trusted == ()


def test_trunk_identity_and_from_domain(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[trunk]\nidentity = "pai"\nfrom_domain = "pbx.example.org"\n')
    )
    assert (config.trunk.identity, config.trunk.from_domain) == ("pai", "pbx.example.org")


def test_absolute_storage_dir(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    config = load_config(write(tmp_path, f'[storage]\ndir = "{data}"\n'))
    assert config.storage.dir == data.resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[sip]\nlisten = 5060", "[sip] listen: expected a string, got 5060"),
        ("[sip]\nlisten = '127.0.0.1'", "[sip] listen: expected 'HOST:PORT'"),
        ("[sip]\nlisten = '127.0.0.1:70000'", "[sip] listen: port must be 1-65535"),
        ("[sip]\nlisten = '::1:5060'", "[sip] listen: expected 'HOST:PORT'"),
        ("[sip]\nlisten = 'bad host:5060'", "[sip] listen: expected an IP address or host name"),
        ("[sip]\nrealm = ''", "[sip] realm: expected a non-empty string"),
        ("[sip]\nrealm = 'a\"b'", "[sip] realm: must not contain quotes"),
        ("[sip]\nuser_agent = true", "[sip] user_agent: expected a string, got true"),
        ("[sip]\ndigest_algorithms = ['SHA1']", "[sip] digest_algorithms: expected a list"),
        ("[sip]\nnonce_lifetime = 1", "[sip] nonce_lifetime: expected seconds (a number 5-3600)"),
        ("[sip]\nauth_max_failures = 0", "[sip] auth_max_failures: expected an integer 1-1000"),
        ("[sip]\nauth_failure_window = 0", "[sip] auth_failure_window: expected seconds"),
        ("[sip]\nauth_lockout = '5m'", "[sip] auth_lockout: expected seconds (a number 1-86400)"),
        ("[sip]\nmax_contacts = 0", "[sip] max_contacts: expected an integer 1-100"),
        ("[sip]\nmax_contacts = 2.5", "[sip] max_contacts: expected an integer 1-100"),
        ("[sip]\nlisten_port = 1", "[sip] listen_port: unknown key"),
        ("[trunk]\nuri = 'http://127.0.0.1'", "[trunk] uri: expected 'sip:HOST"),
        ("[trunk]\nuri = 'sip:127.0.0.1;transport=sctp'", "[trunk] uri: transport must be"),
        ("[trunk]\ntrusted = '127.0.0.1'", "[trunk] trusted: expected a list of IP addresses"),
        ("[trunk]\ntrusted = [1]", "[trunk] trusted: expected a list of strings"),
        ("[trunk]\nidentity = 'rpid'", "[trunk] identity: expected 'from' or 'pai'"),
        ("[trunk]\nfrom_domain = 'a b'", "[trunk] from_domain: expected an IP address or host"),
        ("[trunk]\ntrusted = ['no way']", "[trunk] trusted: expected an IP address or host"),
        ("[media]\naddress = 'localhost'", "[media] address: expected an IP address"),
        (
            "[media]\nrtp_ports = '20001-20000'",
            "[media] rtp_ports: expected 'FIRST-LAST' with even FIRST < LAST",
        ),
        ("[media]\nrtp_ports = '20001-20099'", "[media] rtp_ports: expected 'FIRST-LAST'"),
        ("[media]\nrtp_ports = '20000-70000'", "[media] rtp_ports: expected 'FIRST-LAST'"),
        ("[media]\nrtp_ports = 20000", "[media] rtp_ports: expected a string"),
        ("[media]\nrtp_timeout = 0", "[media] rtp_timeout: expected seconds"),
        ("[media]\nrtp_timeout = '30'", "[media] rtp_timeout: expected seconds"),
        ("[media]\nhangup_after_silence = 0.5", "[media] hangup_after_silence: expected seconds"),
        ("[media]\nhangup_after_silence = -1", "[media] hangup_after_silence: expected seconds"),
        ("[media]\nnat = 'yes'", "[media] nat: expected true or false"),
        ("[media]\nlatch_window = 0", "[media] latch_window: expected seconds between 0.5 and 30"),
        ("[media]\nlatch_window = 60", "[media] latch_window: expected seconds between 0.5 and 30"),
        ("[recording]\nchannels = 'quad'", "[recording] channels: expected 'mono' or 'stereo'"),
        ("[recording]\nformat = 'mp3'", "[recording] format: expected 'wav' or 'flac'"),
        ("[recording]\nfeature_code = '*x'", f"[recording] feature_code: {CODE_RULE}"),
        ("[recording]\nfeature_code = ''", f"[recording] feature_code: {CODE_RULE}"),
        ("[recording]\nfeature_code = '*12'", f"[recording] feature_code: {CODE_RULE}"),
        ("[recording]\nfeature_code = 'A'", f"[recording] feature_code: {CODE_RULE}"),
        ("[recording]\nfeature_code = 5", "[recording] feature_code: expected a string, got 5"),
        ("[recording]\nannouncement = 'missing.wav'", "[recording] announcement: expected"),
        ("[storage]\ndir = ''", "[storage] dir: expected a non-empty string"),
        ("[storage]\ndb = 3", "[storage] db: expected a string"),
        ("[retention]\ndefault_days = 29", "[retention] default_days: expected an integer 30-365"),
        ("[retention]\ndefault_days = 366", "[retention] default_days: expected an integer"),
        ("[retention]\ndefault_days = 90.0", "[retention] default_days: expected an integer"),
        ("[portal]\nlisten = '127.0.0.1:0'", "[portal] listen: port must be 1-65535"),
        ("[smtp]\nport = 0", "[smtp] port: expected an integer 1-65535, got 0"),
        ("[smtp]\nport = true", "[smtp] port: expected an integer 1-65535, got true"),
        ("[smtp]\nsender = 'nobody'", "[smtp] sender: expected an email address"),
        ("[smtp]\nhost = ''", "[smtp] host: expected a non-empty string"),
        ("[smpt]\nhost = 'x'", "unknown section [smpt]"),
        ("listen = '127.0.0.1:5060'", "listen: unknown key outside any section"),
        ("sip = 1", "[sip]: expected a table"),
        ("[sip\n", "invalid TOML"),
    ],
)
def test_every_error_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert message.startswith("config error: ")
    assert expected in message
    assert "\n" not in message


def test_storage_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"\[storage\] dir: expected a folder"):
        load_config(write(tmp_path, "[storage]\ndir = 'data'\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.toml"):
        load_config(tmp_path / "nope.toml")


def test_parse_host_port() -> None:
    assert parse_host_port("[::1]:5060") == HostPort("::1", 5060)
    assert parse_host_port("10.0.0.1:80") == HostPort("10.0.0.1", 80)
    with pytest.raises(ValueError):
        parse_host_port("10.0.0.1")


def test_a_feature_code_the_dtmf_layer_cannot_match_is_refused_at_start(tmp_path: Path) -> None:
    # "#5" once passed this check and then failed every on-demand call, unrecorded.
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[recording]\nfeature_code = '#5'\n"))
    assert str(caught.value) == (
        "config error: [recording] feature_code: the feature code must be * followed by"
        " one digit 0-9 (e.g. *1), got '#5'"
    )


def test_recording_settings_come_from_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "[recording]\nfeature_code = '*4'\nchannels = 'stereo'\npaused = 'silence'\n"
            "swallow_feature_code = true\n[retention]\ndefault_days = 200\n",
        )
    )
    settings = config.recording_settings
    assert settings.feature_code == FeatureCode("4")
    assert (settings.channels, settings.format, settings.paused) == ("stereo", "wav", "silence")
    assert (settings.retention_days, settings.swallow_feature_code) == (200, True)
