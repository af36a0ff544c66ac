"""baresip (Debian `baresip`, 1.0) as a headless test phone: a generated config folder,
audio from and to WAV files (`aufile`), no UI and no sound card.

A `Baresip` runs one process, bounded twice: baresip's own `-t SECONDS` (it hangs up
its calls and un-registers, then exits) and `stop()`, which ends it by its PID. What it
does is read from its output (`wait_for`), which is also kept in `baresip.log`.

    phone = Baresip(work_dir, account=account("100", "pw", "127.0.0.1", 5061, transport="tls"),
                    ca=ca_pem, play=chirp_wav, commands=["/dial 300"], time_limit_s=8)
    phone.start(); phone.wait_for(REGISTERED); phone.wait(); phone.stop()
    heard = phone.heard()  # what it decoded from the call, as a WAV

Facts of baresip 1.0 this relies on: an account `<sip:USER@HOST:PORT;transport=tls>`
registers to HOST:PORT over TLS and completes a dialled `300` to
`sip:300@HOST:PORT;transport=tls`; `sip_cafile` is what it verifies servers with;
with `sip_certificate` (certificate and key in one PEM) it also listens for TLS, on the
`sip_listen` port plus one; `aufile` is an audio source only (16-bit PCM WAV at the
codec's rate and channels: 8 kHz mono for G.711, 48 kHz stereo for `opus/48000/2`;
baresip's own resampler, `ausrc_srate`, is too coarse for a correlation check), and a
call ends when its file does, so the file played sets the length of a call; the
`sndfile` filter writes what was decoded to `dump-*-dec.wav` in `snd_path`; an account's
`;mediaenc=srtp-mand` (with `srtp.so` loaded) offers RTP/SAVP with SDES keys and
refuses a call without them; `ctrl_tcp.so` takes commands while it runs, as netstrings
of JSON (`{"command": "sndcode", "params": "*"}` keys `*` as RFC 4733 events on the
call, then releases it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testkit.sipp_runner import free_port
from testkit.waiting import WaitTimeout, wait_until

BARESIP = "baresip"
MODULES = "/usr/lib/baresip/modules"
# What baresip prints (matched as regular expressions on its output).
REGISTERED = r"\{0/(UDP|TCP|TLS)/v4\} 200 OK \(\) \[\d+ binding"
CALL_ESTABLISHED = r"[Cc]all established"
INCOMING_CALL = r"[Ii]ncoming call|answering call"
SESSION_CLOSED = r"session closed"
CALL_TERMINATED = r"[Cc]all with .* terminated"


def registered_over(transport: str) -> str:
    """What baresip prints once registered over `transport` ("udp", "tcp", "tls")."""
    return REGISTERED.replace("(UDP|TCP|TLS)", transport.upper())


def account(
    user: str,
    password: str | None,
    host: str,
    port: int,
    *,
    transport: str = "udp",
    register: bool = True,
    answer: bool = True,
    mediaenc: str | None = None,
    audio_codecs: str | None = None,
) -> str:
    """One line of baresip's `accounts`: `user` at host:port over `transport` (baresip
    1.0 cannot register a sips: account: "Function not implemented"); `mediaenc`
    "srtp" or "srtp-mand" needs `srtp.so` in `Baresip.modules`; `audio_codecs` (e.g.
    "opus/48000/2", with `opus.so` in `Baresip.modules`) is the only codecs it offers."""
    params = f";transport={transport}" if transport != "udp" else ""
    line = f"<sip:{user}@{host}:{port}{params}>"
    if password is not None:
        line += f";auth_pass={password}"
    line += ";regint=600" if register else ";regint=0"
    if answer:
        line += ";answermode=auto"
    if mediaenc is not None:
        line += f";mediaenc={mediaenc}"
    if audio_codecs is not None:
        line += f";audio_codecs={audio_codecs}"
    return line


@dataclass
class Baresip:
    """One headless baresip process (see the module docstring)."""

    work_dir: Path
    account: str
    listen: str = "127.0.0.1:0"  # port 0: a free one
    ca: Path | None = None  # sip_cafile: the CA servers are verified with
    certificate: Path | None = None  # sip_certificate: certificate and key, one PEM
    # 16-bit PCM WAV sent into calls; a call ends with it. Default: silence for as long
    # as the process may run.
    play: Path | None = None
    commands: list[str] = field(default_factory=list)  # -e commands at start, e.g. "/dial 300"
    time_limit_s: float = 30.0
    modules: list[str] = field(default_factory=list)  # more, e.g. "srtp.so"
    control: bool = False  # ctrl_tcp on a free port: `command()` while it runs
    process: subprocess.Popen[bytes] | None = None
    control_port: int | None = None

    @property
    def config_dir(self) -> Path:
        return self.work_dir / "baresip"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "baresip.log"

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        host, _, port = self.listen.rpartition(":")
        if port == "0":
            port = str(_free_port_pair(host))
        self.listen = f"{host}:{port}"
        play = self.play if self.play is not None else self.work_dir / "silence.wav"
        if self.play is None:
            _write_silence(play, self.time_limit_s + 5)
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "poll_method epoll",
            f"sip_listen {self.listen}",
            f"audio_source aufile,{play}",
            f"snd_path {self.dump_dir}",
            f"module_path {MODULES}",
            "module g711.so",
            "module aufile.so",
            "module sndfile.so",
            *(f"module {name}" for name in self.modules),
            "module_tmp account.so",
            "module_app menu.so",
        ]
        if self.control:
            if self.control_port is None:
                self.control_port = free_port(socket.SOCK_STREAM)
            lines += ["module_app ctrl_tcp.so", f"ctrl_tcp_listen {host}:{self.control_port}"]
        if self.ca is not None:
            lines.append(f"sip_cafile {self.ca}")
        if self.certificate is not None:
            lines.append(f"sip_certificate {self.certificate}")
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")
        (self.config_dir / "accounts").write_text(self.account + "\n")
        # baresip writes these when missing; present, it leaves the folder alone.
        (self.config_dir / "contacts").write_text("")

    @property
    def dump_dir(self) -> Path:
        return self.work_dir / "sndfile"

    def heard(self) -> list[Path]:
        """The WAVs of what it decoded, one per call, oldest first."""
        return sorted(self.dump_dir.glob("dump-*-dec.wav"), key=lambda path: path.stat().st_mtime)

    @property
    def tls_port(self) -> int:
        """Where it listens for TLS (with a certificate): the sip_listen port plus one."""
        return int(self.listen.rpartition(":")[2]) + 1

    def start(self) -> Baresip:
        self.write_config()
        command = [BARESIP, "-f", str(self.config_dir), "-t", f"{int(self.time_limit_s)}"]
        for line in self.commands:
            command += ["-e", line]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        """The output once `pattern` (a regular expression) occurs `count` times in it."""

        def seen() -> str | None:
            text = self.output()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"baresip ended before {pattern!r}:\n{text[-3000:]}")
            return None

        try:
            return wait_until(seen, timeout=timeout, what=f"baresip: {pattern}", interval=0.05)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.output()[-3000:]}") from None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for baresip to end by itself (its -t limit); then stop it by PID."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout or self.time_limit_s + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def run_call(self, transport: str, timeout: float = 10.0) -> None:
        """Start, wait until registered over `transport` and a call (dialled by a
        command) is established, let it run to the time limit, and stop."""
        try:
            self.start()
            self.wait_for(registered_over(transport), timeout=timeout)
            self.wait_for(CALL_ESTABLISHED, timeout=timeout)
            self.wait()
        finally:
            self.stop()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        """Run a menu command (`name` without the slash) through ctrl_tcp; its response.
        Raises AssertionError when baresip says it failed."""
        assert self.control_port is not None, "start it with control=True"
        host = self.listen.rpartition(":")[0]
        request = json.dumps({"command": name, "params": params, "token": name}).encode()
        with socket.create_connection((host, self.control_port), timeout=timeout) as sock:
            sock.sendall(b"%d:%s," % (len(request), request))
            buffer = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    raise AssertionError(f"baresip closed ctrl_tcp before answering {name}")
                buffer += data
                while b":" in buffer:
                    length_text, _, rest = buffer.partition(b":")
                    length = int(length_text)
                    if len(rest) < length + 1:
                        break
                    message = json.loads(rest[:length])
                    buffer = rest[length + 1 :]
                    if message.get("response"):
                        if not message.get("ok"):
                            raise AssertionError(f"baresip {name} {params}: {message}")
                        return dict(message)

    def stop(self) -> None:
        """End the process by its PID: SIGTERM, then SIGKILL after 5 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _free_port_pair(host: str) -> int:
    """A port P with P free for UDP and TCP and P+1 free for TCP (baresip's TLS)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port >= 65000:
            continue
        try:
            for kind, candidate in (
                (socket.SOCK_STREAM, port),
                (socket.SOCK_STREAM, port + 1),
                (socket.SOCK_DGRAM, port),
            ):
                with socket.socket(socket.AF_INET, kind) as check:
                    check.bind((host, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port pair on {host}")


def _write_silence(path: Path, seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    sf.write(path, np.zeros(int(8000 * seconds), dtype=np.int16), 8000, subtype="PCM_16")
