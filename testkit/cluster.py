"""A local callrec cluster for the cluster tests and the bench: one PostgreSQL
(`testkit.postgres`), one SeaweedFS S3 store (`testkit.s3`), Kamailio
(deploy/kamailio/kamailio.cfg) on 127.0.0.10 and callrec nodes on 127.0.0.2, 127.0.0.3
..., each with its own data folder (recordings while they are written, the upload
queue), media address and RTP range, all sharing the database and the bucket.

`Cluster.start()` brings it all up (the database migrated and given the users first,
then the nodes, then Kamailio, each waited for by a probe, never a sleep);
`Cluster.stop()` ends every process by its PID and deletes the database's and the
store's folders. `cluster_missing()` says why it cannot run here (None when it can).
`Cluster.sql()` reads the shared database directly, for the tests' checks (which node
handled which call: `calls.node` is `Node.name`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.uploads import node_name
from testkit.harness import CALLREC, sip_options, start_serve
from testkit.postgres import PostgresCluster, postgres_missing
from testkit.processes import stop_by_pid
from testkit.s3 import SeaweedS3, weed_missing
from testkit.sipp_runner import free_port
from testkit.waiting import wait_until

__all__ = [
    "CALLREC",
    "PROXY_HOST",
    "Cluster",
    "Kamailio",
    "Node",
    "cluster_missing",
    "kamailio_missing",
    "wait_log",
]

REPO = Path(__file__).resolve().parents[1]
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
PROXY_HOST = "127.0.0.10"
DATABASE = "callrec"


def kamailio_missing() -> str | None:
    """Why Kamailio cannot run here (None when it can)."""
    if shutil.which("kamailio") is None:
        return "kamailio is not installed (scripts/setup.sh --cluster installs it)"
    if shutil.which("sipp") is None:
        return "sipp is not installed (scripts/setup.sh installs it)"
    return None


def cluster_missing() -> str | None:
    """Why a whole cluster cannot run here (None when it can)."""
    return kamailio_missing() or postgres_missing() or weed_missing()


@dataclass
class Node:
    """One `callrec serve` on its own loopback address; `storage` holds the `[storage]`
    keys of the shared database and bucket (empty: its own SQLite and folder)."""

    root: Path
    host: str
    trunk_port: int
    storage: str = ""
    extra: str = ""
    sip_extra: str = ""
    proxy_host: str = PROXY_HOST
    log_format: str = "json"
    workers: int = 1
    rtp_ports: int = 200
    sip_port: int = field(default_factory=free_port)
    portal_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    rtp_first: int = 0
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.rtp_first:
            self.rtp_first = free_port(even=True, span=self.rtp_ports)
        self.config_path.write_text(
            "[sip]\n"
            f'listen = "{self.host}:{self.sip_port}"\n'
            f'proxies = ["{self.proxy_host}"]\n'
            'digest_algorithms = ["MD5"]\n'
            f"{self.sip_extra}"
            "[trunk]\n"
            f'uri = "sip:127.0.0.1:{self.trunk_port}"\n'
            "[media]\n"
            f'address = "{self.host}"\n'
            f'rtp_ports = "{self.rtp_first}-{self.rtp_first + self.rtp_ports - 1}"\n'
            f"workers = {self.workers}\n"
            "[storage]\n"
            f'dir = "{self.data_dir}"\n'
            f"{self.storage}"
            "[portal]\n"
            f'listen = "{self.host}:{self.portal_port}"\n'
            f'public_url = "http://{self.host}:{self.portal_port}"\n'
            "metrics = true\n"
            "[server]\n"
            f'log_format = "{self.log_format}"\n'
            f"{self.extra}"
        )

    @property
    def data_dir(self) -> Path:
        return (self.root / "data").resolve()

    @property
    def name(self) -> str:
        """The node's name in the shared store (`calls.node`, `recordings.upload_node`)."""
        return node_name(self.data_dir)

    @property
    def config_path(self) -> Path:
        return self.root / "callrec.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "serve.log"

    @property
    def portal_url(self) -> str:
        return f"http://{self.host}:{self.portal_port}"

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*CALLREC, *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def calls(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("calls", "list", "--json"))
        return rows

    def recordings(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("recordings", "list", "--json"))
        return rows

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "CALLREC_LOG_LEVEL": "INFO"}
        self.process = start_serve(
            self.config_path, self.log_path, env, self.host, self.sip_port, timeout
        )

    def kill(self) -> None:
        """kill -9, by PID."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_by_pid(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Kamailio:
    """Kamailio with deploy/kamailio/kamailio.cfg in front of `nodes`."""

    root: Path
    nodes: list[Node]
    host: str = PROXY_HOST
    port: int = field(default_factory=free_port)
    children: int = 2
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "kamailio.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        targets = self.root / "dispatcher.list"
        targets.write_text("".join(f"1 sip:{node.host}:{node.sip_port}\n" for node in self.nodes))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "kamailio",
                    "-f",
                    str(KAMAILIO_CFG),
                    "-DD",
                    "-E",
                    "-l",
                    f"udp:{self.address}",
                    "-A",
                    f'DISPATCHER_LIST="{targets}"',
                    "-A",
                    f"CHILDREN={self.children}",
                    "-m",
                    "64",
                    "-M",
                    "8",
                    "-Y",
                    str(self.root),
                    "-P",
                    str(self.root / "kamailio.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"kamailio exited:\n{self.log()}")
            return sip_options(self.port, timeout=0.3, host=self.host) is not None

        wait_until(answering, timeout=timeout, what="kamailio up", interval=0.05)

    def stop(self) -> None:
        stop_by_pid(self.process)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _in_thread(work: Any) -> Any:
    """Run a coroutine on a loop of its own (a caller's loop may be running)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


@dataclass
class Cluster:
    """PostgreSQL, SeaweedFS, `size` nodes and Kamailio (see the module docstring).
    `node_extra` is appended to every node's config (e.g. a `[cluster]` table)."""

    root: Path
    size: int = 2
    trunk_port: int = field(default_factory=free_port)
    storage_extra: str = ""
    node_extra: str = ""
    sip_extra: str = ""
    workers: int = 1
    rtp_ports: int = 200
    # The nodes' RTP ranges one after the other from here (0: free ports for each).
    rtp_first: int = 0
    kamailio_children: int = 2
    users: tuple[tuple[str, ...], ...] = ()
    admins: tuple[tuple[str, str], ...] = ()
    postgres: PostgresCluster | None = None
    s3: SeaweedS3 | None = None
    nodes: list[Node] = field(default_factory=list)
    proxy: Kamailio | None = None

    @property
    def database_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.url(DATABASE)

    def start(self) -> None:
        missing = cluster_missing()
        if missing is not None:
            raise RuntimeError(missing)
        try:
            self.postgres = PostgresCluster.start()
            _in_thread(self.postgres.create_database(DATABASE))
            self.s3 = SeaweedS3(root=self.root / "s3")
            self.s3.start()
            storage = (
                f'db = "{self.database_url}"\n' + self.s3.storage_toml("cluster")
            ) + self.storage_extra
            self.nodes = [
                Node(
                    self.root / f"node{i + 1}",
                    f"127.0.0.{i + 2}",
                    self.trunk_port,
                    storage=storage,
                    extra=self.node_extra,
                    sip_extra=self.sip_extra,
                    workers=self.workers,
                    rtp_ports=self.rtp_ports,
                    rtp_first=self.rtp_first + i * self.rtp_ports if self.rtp_first else 0,
                )
                for i in range(self.size)
            ]
            first = self.nodes[0]  # one shared database: the first node's CLI fills it
            for user in self.users:
                first.cli("users", "add", *user)
            for name, password in self.admins:
                first.cli("admin", "add", name, "--password", password)
            for node in self.nodes:
                node.start()
            self.proxy = Kamailio(
                self.root / "kamailio", self.nodes, children=self.kamailio_children
            )
            self.proxy.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for node in self.nodes:
            node.stop()
        if self.s3 is not None:
            self.s3.close()
        if self.postgres is not None:
            self.postgres.destroy()

    def processes(self) -> dict[int, str]:
        """The PIDs of the cluster's running servers (each with its children), by name:
        the nodes, Kamailio, PostgreSQL's postmaster and SeaweedFS."""
        found: dict[int, str] = {}
        for index, node in enumerate(self.nodes, 1):
            if node.process is not None:
                found[node.process.pid] = f"node{index}"
        if self.proxy is not None and self.proxy.process is not None:
            found[self.proxy.process.pid] = "kamailio"
        postmaster = self.postgres.pid() if self.postgres is not None else None
        if postmaster is not None:
            found[postmaster] = "postgres"
        if self.s3 is not None and self.s3.process is not None:
            found[self.s3.process.pid] = "seaweedfs"
        return found

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of one query on the shared database."""

        async def read() -> list[dict[str, Any]]:
            import asyncpg

            connection = await asyncpg.connect(self.database_url, timeout=10)
            try:
                return [dict(row) for row in await connection.fetch(query, *args)]
            finally:
                await connection.close()

        rows: list[dict[str, Any]] = _in_thread(read())
        return rows

    def calls_by_node(self) -> dict[str, list[dict[str, Any]]]:
        """Every call row, by the name of the node that handled it."""
        by_node: dict[str, list[dict[str, Any]]] = {node.name: [] for node in self.nodes}
        for row in self.sql("SELECT * FROM calls ORDER BY id"):
            by_node.setdefault(str(row["node"]), []).append(row)
        return by_node


def wait_log(path: Path, text: str, timeout: float) -> float:
    """Seconds until `text` appears in the file at `path` (WaitTimeout past `timeout`)."""
    started = time.monotonic()
    wait_until(
        lambda: path.exists() and text in path.read_text(errors="replace"),
        timeout=timeout,
        what=f"{text!r} in {path.name}",
        interval=0.05,
    )
    return time.monotonic() - started
