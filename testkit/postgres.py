"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder.

`PostgresCluster.start()` runs Debian's `initdb` and `pg_ctl` (from
/usr/lib/postgresql/<version>/bin, the newest there, or `CALLREC_PG_BIN`) on a free TCP
port of 127.0.0.1 with a new data folder under /tmp. PostgreSQL refuses to run as root, so
as root every server command runs as the `postgres` user (`runuser -u postgres --`) and
the folder is handed to that user. Authentication is `trust` on loopback only: the
cluster holds test data and lives as long as the test session.

Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`): a crash of the
test machine loses a cluster that is thrown away anyway, and the tests run faster.

Databases: `create_database` copies a template (`CREATE DATABASE ... TEMPLATE`), which
is how each test gets a migrated, empty store in milliseconds; `drop_database` ends it.
`stop()` stops the server (`pg_ctl stop -m fast`, then SIGKILL to the postmaster's PID
if it has not gone in time) and `start_again()` brings the same cluster back on the
same port: the outage tests use both.

`postgres_missing()` says why there is no server to run (None when there is one): the
tests that need one skip with that reason; `scripts/setup.sh --cluster` installs it.

`python -m testkit.postgres up DIR` starts one that outlives the command
(scripts/cluster.sh) with a database `callrec`, keeps where it is in DIR/state.json and
prints the database's URL; `up` again starts the same cluster again, and
`python -m testkit.postgres down DIR` stops it (its data stays until `down --delete`).
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PostgresCluster",
    "PostgresError",
    "find_postgres_bin",
    "postgres_missing",
]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SUPERUSER = "callrec"
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0


class PostgresError(RuntimeError):
    """The test cluster could not be created, started or stopped; says which step."""


def find_postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: `CALLREC_PG_BIN`, else Debian's
    newest /usr/lib/postgresql/<version>/bin, else None."""
    configured = os.environ.get("CALLREC_PG_BIN")
    candidates = [Path(configured)] if configured else []
    if _DEBIAN_ROOT.is_dir():
        versions = sorted(
            (p for p in _DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [version / "bin" for version in versions]
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def _as_root() -> bool:
    return os.geteuid() == 0


def postgres_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    if importlib.util.find_spec("asyncpg") is None:
        return (
            "asyncpg is not installed: pip install 'callrec[cluster]' (scripts/setup.sh --cluster)"
        )
    if find_postgres_bin() is None:
        return (
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/<version>/bin/"
            "initdb): run scripts/setup.sh --cluster, or set CALLREC_PG_BIN"
        )
    if _as_root():
        if shutil.which("runuser") is None:
            return "running as root needs runuser to start PostgreSQL as another user"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the 'postgres' user (Debian's postgresql package)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresCluster:
    """One running test cluster (see the module docstring)."""

    bin_dir: Path
    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir.parent / "postgres.log"

    # -- life cycle ----------------------------------------------------------------

    @classmethod
    def start(cls, *, port: int | None = None) -> PostgresCluster:
        """initdb a new cluster in a fresh /tmp folder and start it."""
        missing = postgres_missing()
        if missing is not None:
            raise PostgresError(missing)
        bin_dir = find_postgres_bin()
        assert bin_dir is not None
        # /tmp, not pytest's tmp_path: that one is private to root (mode 0700).
        base = Path(tempfile.mkdtemp(prefix="callrec-pg-"))
        data_dir = base / "data"
        data_dir.mkdir()
        if _as_root():
            shutil.chown(base, "postgres", "postgres")
            shutil.chown(data_dir, "postgres", "postgres")
        cluster = cls(bin_dir, data_dir, port if port is not None else free_port())
        cluster._run(
            "initdb",
            "-D",
            str(data_dir),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        cluster.start_again()
        return cluster

    def start_again(self) -> None:
        """Start the server of this cluster (after `stop()`), on the same port."""
        options = " ".join(
            (
                f"-p {self.port}",
                f"-c listen_addresses={self.host}",
                f"-c unix_socket_directories={self.data_dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            )
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(int(_START_TIMEOUT_S)),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
        )

    def pid(self) -> int | None:
        """The postmaster's PID while it runs (first line of postmaster.pid)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the server: pg_ctl's fast shutdown (clients are disconnected), then
        SIGKILL to its PID if it is still there."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(PostgresError):
            self._run(
                "pg_ctl", "stop", "-w", "-t", str(int(_STOP_TIMEOUT_S)), "-m", "fast",
                "-D", str(self.data_dir),
            )  # fmt: skip
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Stop the server and delete the cluster's folder."""
        self.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    # -- databases -----------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    async def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database `name` (a copy of `template` if given); returns its URL."""
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            suffix = f" TEMPLATE {_quoted(template)}" if template else ""
            await connection.execute(f"CREATE DATABASE {_quoted(name)}{suffix}")
        finally:
            await connection.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
        finally:
            await connection.close()

    # -- helpers -------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if _as_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            check=False,
        )
        if done.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.log_file.read_text()[-2000:]
            raise PostgresError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                + (f"\nserver log:\n{tail}" if tail else "")
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours would look alive; pg_ctl's postmaster is not our child.
    return True


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_CLI_DATABASE = "callrec"


def _main(argv: list[str]) -> int:
    """`up DIR` / `down [--delete] DIR` (see the module docstring)."""
    delete = "--delete" in argv
    argv = [arg for arg in argv if arg != "--delete"]
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m testkit.postgres up|down [--delete] DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    state = root / "state.json"
    try:
        if argv[0] == "up":
            root.mkdir(parents=True, exist_ok=True)
            if state.exists():
                saved = json.loads(state.read_text())
                bin_dir = find_postgres_bin()
                if bin_dir is None:
                    raise PostgresError(postgres_missing() or "no PostgreSQL binaries")
                cluster = PostgresCluster(bin_dir, Path(saved["data_dir"]), int(saved["port"]))
                if cluster.pid() is None or not _alive(cluster.pid() or 0):
                    cluster.start_again()
            else:
                cluster = PostgresCluster.start()
                asyncio.run(cluster.create_database(_CLI_DATABASE))
                state.write_text(
                    json.dumps({"data_dir": str(cluster.data_dir), "port": cluster.port})
                )
            print(cluster.url(_CLI_DATABASE))
            return 0
        if not state.exists():
            return 0
        saved = json.loads(state.read_text())
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            raise PostgresError(postgres_missing() or "no PostgreSQL binaries")
        cluster = PostgresCluster(bin_dir, Path(saved["data_dir"]), int(saved["port"]))
        if delete:
            cluster.destroy()
            state.unlink()
        else:
            cluster.stop()
        return 0
    except PostgresError as exc:
        print(f"testkit.postgres: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
