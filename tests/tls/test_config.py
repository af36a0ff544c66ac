"""[sip] tls_* and TLS trunk URIs in the config: defaults, files checked at load (missing,
unreadable, not a certificate, a key that does not match), and one-line errors naming the
key; the digest default of one MD5 challenge; and the contexts `b2bua.tls` builds."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trustme

from b2bua.tls import tls_settings
from callrec.config import ConfigError, HostPort, load_config


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> Path:
    """cert.pem, key.pem, both.pem (cert and key), ca.pem, other-key.pem in tmp_path."""
    leaf = ca.issue_cert("127.0.0.1", "sip.example")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "callrec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(folder, text))
    return str(caught.value)


def test_tls_is_off_by_default_and_digest_is_one_md5_challenge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sip = load_config(None).sip
    assert not sip.tls and sip.listen_tls is None
    assert sip.digest_algorithms == ("MD5",)
    assert tls_settings(sip) is None


def test_sha256_is_opt_in(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[sip]\ndigest_algorithms = ["SHA-256", "MD5"]\n'))
    assert config.sip.digest_algorithms == ("SHA-256", "MD5")


def test_a_certificate_turns_tls_on_at_5061_on_the_listen_host(files: Path) -> None:
    config = load_config(
        _write(
            files,
            '[sip]\nlisten = "127.0.0.2:5070"\ntls_certificate = "cert.pem"\ntls_key = "key.pem"\n',
        )
    )
    sip = config.sip
    assert sip.tls
    assert sip.listen_tls == HostPort("127.0.0.2", 5061)
    assert sip.tls_certificate == files / "cert.pem"  # relative to the config's folder
    assert (sip.tls_client_certificates, sip.tls_handshake_timeout) == ("none", 10.0)
    settings = tls_settings(sip)
    assert settings is not None
    assert (settings.host, settings.port) == ("127.0.0.2", 5061)
    assert settings.server.verify_mode == ssl.CERT_NONE
    assert settings.client.verify_mode == ssl.CERT_REQUIRED and settings.client.check_hostname


def test_a_combined_pem_needs_no_key_and_client_certificates_use_the_ca(files: Path) -> None:
    config = load_config(
        _write(
            files,
            '[sip]\nlisten_tls = "127.0.0.1:5071"\ntls_certificate = "both.pem"\n'
            'tls_ca = "ca.pem"\ntls_client_certificates = "required"\n',
        )
    )
    settings = tls_settings(config.sip)
    assert settings is not None and settings.port == 5071
    assert settings.server.verify_mode == ssl.CERT_REQUIRED
    assert settings.server.cert_store_stats()["x509_ca"] == 1
    assert settings.client.cert_store_stats()["x509_ca"] == 1  # the trunk: tls_ca, not the system


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tls_certificate = "missing.pem"', "[sip] tls_certificate: cannot read "),
        (
            'tls_certificate = "key.pem"\ntls_key = "key.pem"',
            "[sip] tls_certificate: no PEM certificate in ",
        ),
        (
            'tls_certificate = "cert.pem"\ntls_key = "other-key.pem"',
            "[sip] tls_key: ",
        ),
        ('tls_certificate = "cert.pem"', "[sip] tls_certificate: no usable private key in "),
        ('tls_certificate = "cert.pem"\ntls_key = "cert.pem"', "[sip] tls_key: no usable private"),
        (
            'tls_certificate = "both.pem"\ntls_client_certificates = "optional"',
            "[sip] tls_client_certificates: 'optional' needs tls_ca",
        ),
        ('tls_certificate = "both.pem"\ntls_ca = "key.pem"', "[sip] tls_ca: no PEM certificate"),
        (
            'tls_certificate = "both.pem"\ntls_client_certificates = "always"',
            "[sip] tls_client_certificates: expected 'none' or 'optional' or 'required'",
        ),
        ('tls_key = "key.pem"', "[sip] tls_key: needs tls_certificate"),
        ('listen_tls = "127.0.0.1:5061"', "[sip] listen_tls: needs tls_certificate"),
        (
            'listen = "127.0.0.1:5061"\ntls_certificate = "both.pem"',
            "[sip] listen_tls: 127.0.0.1:5061 is also [sip] listen",
        ),
        ('tls_certificate = "both.pem"\ntls_handshake_timeout = 0', "[sip] tls_handshake_timeout"),
    ],
)
def test_tls_errors_name_the_key(files: Path, text: str, expected: str) -> None:
    message = error(files, f"[sip]\n{text}\n")
    assert message.startswith(f"config error: {expected}"), message


def test_a_key_that_does_not_match_says_so(files: Path) -> None:
    message = error(files, '[sip]\ntls_certificate = "cert.pem"\ntls_key = "other-key.pem"\n')
    assert "does not match the certificate" in message


def test_a_key_that_cannot_be_read_says_why(files: Path) -> None:
    (files / "keys").mkdir()  # as root every file is readable; a folder is not a file
    message = error(files, '[sip]\ntls_certificate = "cert.pem"\ntls_key = "keys"\n')
    assert (
        message
        == f"config error: [sip] tls_key: cannot read {str(files / 'keys')!r}: Is a directory"
    )


@pytest.mark.parametrize(
    ("uri", "host", "port"),
    [
        ("sips:trunk.example", "trunk.example", 5061),
        ("sips:127.0.0.2:5071;transport=tcp", "127.0.0.2", 5071),
        ("sip:127.0.0.2:5071;transport=tls", "127.0.0.2", 5071),
        ("sip:300@[::1]:5071;transport=TLS", "::1", 5071),
    ],
)
def test_trunks_over_tls(files: Path, uri: str, host: str, port: int) -> None:
    config = load_config(
        _write(files, f'[sip]\ntls_certificate = "both.pem"\n[trunk]\nuri = "{uri}"\n')
    )
    assert (config.trunk.host, config.trunk.port, config.trunk.transport) == (host, port, "tls")


def test_a_tls_trunk_without_a_certificate_is_a_config_error_not_udp(tmp_path: Path) -> None:
    for uri in ("sips:127.0.0.2", "sip:127.0.0.2;transport=tls"):
        message = error(tmp_path, f'[trunk]\nuri = "{uri}"\n')
        assert message.startswith("config error: [trunk] uri: "), message
        assert "needs [sip] tls_certificate" in message


def test_a_sips_trunk_over_udp_is_refused(files: Path) -> None:
    message = error(
        files,
        '[sip]\ntls_certificate = "both.pem"\n[trunk]\nuri = "sips:127.0.0.2;transport=udp"\n',
    )
    assert message == (
        "config error: [trunk] uri: a sips: URI goes over TLS, not udp,"
        " got 'sips:127.0.0.2;transport=udp'"
    )


@pytest.mark.parametrize("logged", [True, False], ids=["SSLKEYLOGFILE", "unset"])
def test_the_server_context_writes_a_key_log_only_when_asked(
    files: Path, monkeypatch: pytest.MonkeyPatch, logged: bool
) -> None:
    """SSLKEYLOGFILE (a debugging aid, as in Python's default contexts) gets the secrets
    of a handshake callrec answers; unset, nothing is written anywhere."""
    key_log = files / "keys.log"
    if logged:
        monkeypatch.setenv("SSLKEYLOGFILE", str(key_log))
    else:
        monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    config = load_config(
        _write(files, '[sip]\nlisten_tls = "127.0.0.1:5071"\ntls_certificate = "both.pem"\n')
    )
    settings = tls_settings(config.sip)
    assert settings is not None
    client = ssl.create_default_context(cafile=str(files / "ca.pem"))
    client.keylog_filename = None  # only the server's log counts here
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = settings.server.wrap_bio(server_in, server_out, server_side=True)
    tls_client = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    for _ in range(10):  # a TLS 1.3 handshake takes two round trips
        for end in (tls_client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert tls_client.version() is not None and server.version() is not None
    if logged:
        assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in key_log.read_text()
    else:
        assert not key_log.exists()
