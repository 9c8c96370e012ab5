"""The money concurrency tests again, with the app behind a real PgBouncer in transaction
pooling mode (Debian's `pgbouncer`, installed if missing and started here on a port of its
own): prepared-statement caches off on both driver paths, the `LISTEN` connection direct
through `DATABASE_LISTEN_URL`. The tests run in a pytest of their own whose PostgreSQL
databases are made and migrated directly, then reached through PgBouncer (tests/conftest.py,
`TEST_PGBOUNCER_URL`); PgBouncer's own statistics prove the traffic went through it."""

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import DEFAULT_PG, ROOT
from tests.servers import free_port

pytestmark = pytest.mark.postgres_only

# What moves credits under contention: reservations racing one balance, settle / release /
# expire races, two server processes on one account, the one-statement fast paths, live
# balance notifications (LISTEN) across instances, and concurrent generations with a key.
MONEY_TESTS = [
    "tests/credits/test_concurrency.py",
    "tests/credits/test_multiprocess.py",
    "tests/credits/test_balance_events.py",
    "tests/generation/test_fast_path.py",
    "tests/generation/test_generations.py::"
    "test_concurrent_requests_with_one_key_make_one_generation_and_one_charge",
    "tests/generation/test_generations.py::test_fifty_concurrent_generations_on_ten_credits",
]


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("pgbouncer is not installed: apt-get install pgbouncer")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbouncer"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    # The package enables its own service on 6432; this test uses only its own instance.
    found = shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    assert found, "pgbouncer did not install"
    return found


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test server; yields its URL."""
    server = make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG))
    binary = pgbouncer_binary()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rankframe-pgbouncer-"))
    user = server.username or "postgres"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.host or "127.0.0.1"} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
admin_users = {user}
pool_mode = transaction
; Far fewer server connections than clients, so clients really share them.
default_pool_size = 20
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
; SHOW STATS totals are refreshed every stats_period seconds.
stats_period = 1
log_connections = 0
log_disconnections = 0
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    workdir.chmod(0o755)
    # PgBouncer refuses to run as root.
    run_as = {"user": "postgres"} if os.geteuid() == 0 else {}
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        for path in workdir.iterdir():
            shutil.chown(path, "postgres")
    process = subprocess.Popen([binary, "-q", str(workdir / "pgbouncer.ini")], **run_as)  # type: ignore[call-overload]
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (workdir / "pgbouncer.log").read_text()
            try:
                with socket_to(port):
                    break
            except OSError:
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.1)
        yield f"postgresql+asyncpg://{user}@127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def socket_to(port: int):  # type: ignore[no-untyped-def]
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=1)


def queries_served(pgbouncer_url: str) -> dict[str, int]:
    """Queries PgBouncer has passed to servers so far, per database: its admin console's
    `SHOW STATS` (simple query protocol only, so psql rather than asyncpg)."""
    url = make_url(pgbouncer_url)
    shown = subprocess.run(
        ["psql", "-h", str(url.host), "-p", str(url.port), "-U", str(url.username)]
        + ["-d", "pgbouncer", "-X", "--csv", "-c", "SHOW STATS"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(shown)))
    return {row["database"]: int(row["total_query_count"]) for row in rows}


def test_the_money_concurrency_tests_pass_through_pgbouncer_in_transaction_mode(pgbouncer):
    env = {
        **os.environ,
        "TEST_PGBOUNCER_URL": pgbouncer,
        "RANKFRAME_TEST_BACKENDS": "postgres",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MONEY_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    summary = re.search(r"(\d+) passed", result.stdout)
    assert summary and int(summary.group(1)) >= 10, result.stdout[-2000:]
    assert not re.search(r"\d+ (skipped|failed|error)", result.stdout), result.stdout[-2000:]
    time.sleep(2)  # two stats periods
    served = queries_served(pgbouncer)
    # The suite's database and the generation tests' databases, all through PgBouncer.
    assert sum(n for db, n in served.items() if db.startswith("rf_test_")) > 1000, served
    assert sum(n for db, n in served.items() if db.startswith("rf_gen_")) > 500, served
