"""A PostgreSQL cluster of a test's own (`initdb` + `pg_ctl` on a free port), for outage
and restart tests: it can be stopped and started at will, unlike the machine's server,
which is never touched. Run as the `postgres` user when the tests run as root."""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.servers import free_port


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise RuntimeError(f"{name} not found: the outage tests need PostgreSQL's binaries")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class ThrowawayCluster:
    directory: Path
    port: int
    max_connections: int = 100

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        """The app's database on this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/rankframe"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/rankframe"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([_binary("pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={self.max_connections}"
        )
        self._pg_ctl("-o", options, "-l", str(self.directory / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: what a restart or failover does to every open connection."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def is_up(self) -> bool:
        result = subprocess.run(
            [_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)


@contextlib.contextmanager
def throwaway_cluster(max_connections: int = 100) -> Iterator[ThrowawayCluster]:
    """A running cluster with an empty database `rankframe`; stopped and removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="rf-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
    cluster = ThrowawayCluster(directory, free_port(), max_connections)
    try:
        subprocess.run(
            _as_postgres(
                [
                    _binary("initdb"),
                    "-D",
                    str(cluster.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        cluster.start()
        subprocess.run(
            _as_postgres(
                [_binary("createdb"), "-h", "127.0.0.1", "-p", str(cluster.port), "rankframe"]
            ),
            check=True,
            timeout=60,
        )
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            if cluster.is_up():
                cluster.stop("immediate")
        deadline = time.monotonic() + 10
        while cluster.is_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(directory, ignore_errors=True)
