"""Container smoke test without a Docker daemon: the Dockerfile read as the recipe it is.

The build stage's `uv sync` makes a fresh virtualenv from uv.lock; the final stage's
`COPY`s lay out a fresh working directory (owned by root, read-only to the service, as in
the image); its `ENV` is the whole environment; its `CMD` runs as an unprivileged user
(`nobody` when the test runs as root); its `HEALTHCHECK` command decides when it is up. The
image's absolute paths (/venv, /srv, /data, /tmp) are mapped into a temporary directory.
"""

import asyncio
import fnmatch
import json
import os
import re
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

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_TOKEN, ROOT
from tests.databases import fresh_database
from tests.servers import free_port

DOCKERFILE = ROOT / "Dockerfile"
UNPRIVILEGED = ("nobody", "nogroup")
# The image's own Python is /usr/local/bin/python; here, one that any user may run.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


@dataclass
class Stage:
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    """(sources, target) of `COPY` from the build context (not `--from`)."""
    workdir: str = "/"
    user: str | None = None
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""
    healthcheck_options: dict[str, str] = field(default_factory=dict)


def parse_dockerfile(text: str) -> list[Stage]:
    """The instructions this Dockerfile uses (continuations joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages: list[Stage] = []
    for line in filter(None, (line.strip() for line in lines)):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append(Stage())
            continue
        stage = stages[-1]
        if instruction == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                stage.env[key] = value
        elif instruction == "RUN":
            stage.runs.append(rest)
        elif instruction == "COPY" and not rest.startswith("--from"):
            *sources, target = rest.split()
            stage.copies.append((sources, target))
        elif instruction == "WORKDIR":
            stage.workdir = rest
        elif instruction == "USER":
            stage.user = rest
        elif instruction == "CMD":
            stage.cmd = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            options, _, command = rest.partition(" CMD ")
            stage.healthcheck = command.strip()
            stage.healthcheck_options = dict(re.findall(r"--([\w-]+)=(\S+)", options))
    return stages


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _run_as_unprivileged() -> dict[str, object]:
    return {"user": UNPRIVILEGED[0], "group": UNPRIVILEGED[1]} if os.geteuid() == 0 else {}


def _python_for_everyone() -> str:
    if os.geteuid() != 0:
        return os.path.realpath(sys.executable)
    for candidate in SYSTEM_PYTHONS:
        if Path(candidate).exists():
            return candidate
    pytest.fail(f"no Python the unprivileged user can run among {SYSTEM_PYTHONS}")


@dataclass
class Image:
    """The image's filesystem, mapped into a temporary directory."""

    root: Path
    stage: Stage

    def path(self, image_path: str) -> str:
        return str(self.root / image_path.lstrip("/"))

    def environment(self, **overrides: str) -> dict[str, str]:
        env = {"HOME": self.path("/srv"), "LANG": "C.UTF-8"}
        for key, value in self.stage.env.items():
            value = value.replace(
                "$PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            )
            env[key] = re.sub(
                r"(?<![\w/])/(venv|srv|data|tmp)\b", lambda m: self.path(m.group(0)), value
            )
        env.update(overrides)
        return env


@pytest.fixture(scope="module")
def image(dockerfile: list[Stage]) -> Iterator[Image]:
    build, final = dockerfile[0], dockerfile[-1]
    # Not under pytest's temp directory: that one is private to the user running pytest.
    root = Path(tempfile.mkdtemp(prefix="rankframe-image-"))
    root.chmod(0o755)
    built = Image(root, final)
    # Build stage: the lock, then the `uv sync` lines exactly as written.
    src = root / "src"
    src.mkdir()
    for sources, target in build.copies:
        assert target in ("./", "."), target
        for source in sources:
            shutil.copy(ROOT / source, src / source)
    assert build.env.get("UV_PROJECT_ENVIRONMENT") == "/venv"
    uv_env = {
        **os.environ,
        **build.env,
        "UV_PROJECT_ENVIRONMENT": built.path("/venv"),
        "UV_PYTHON": _python_for_everyone(),
    }
    uv_env.pop("VIRTUAL_ENV", None)
    syncs = [run for run in build.runs if run.startswith("uv sync")]
    assert syncs, "the build stage installs with `uv sync`"
    for run in syncs:
        # This machine's uv cache holds the same hash-checked files: no need to refetch.
        args = [a for a in run.split()[2:] if a != "--no-cache"]
        subprocess.run([str(ROOT / ".venv/bin/uv"), "sync", *args], cwd=src, env=uv_env, check=True)
    # Final stage: the code, owned by root; a data directory and /tmp the user may write.
    srv = Path(built.path(final.workdir))
    srv.mkdir(parents=True)
    for sources, target in final.copies:
        for source in sources:
            destination = srv / target if target not in ("./", ".") else srv / source
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(ROOT / source, destination)
    for directory in (root, srv, Path(built.path("/venv"))):
        for dirpath, _dirnames, filenames in os.walk(directory):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = Path(dirpath, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444)
    tmp = Path(built.path("/tmp"))
    tmp.mkdir()
    tmp.chmod(0o1777)
    data = Path(built.path("/data"))
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, *UNPRIVILEGED)
    data.chmod(0o700)
    try:
        yield built
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Container:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(image: Image, **env: str) -> Container:
    port = free_port()
    log = Path(image.path("/tmp")) / f"container-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            image.stage.cmd,
            cwd=image.path(image.stage.workdir),
            env=image.environment(PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            **_run_as_unprivileged(),  # type: ignore[arg-type]
        )
    return Container(process, port, log)


def healthy(image: Image, container: Container) -> bool:
    """The image's own HEALTHCHECK command, as Docker runs it (shell form, same user)."""
    result = subprocess.run(
        ["sh", "-c", image.stage.healthcheck],
        env=image.environment(PORT=str(container.port)),
        capture_output=True,
        timeout=10,
        **_run_as_unprivileged(),  # type: ignore[arg-type]
    )
    return result.returncode == 0


def wait_healthy(image: Image, container: Container, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            pytest.fail(f"container exited {container.process.returncode}:\n{container.output()}")
        if healthy(image, container):
            return
        time.sleep(0.5)
    pytest.fail(f"not healthy within {within} s:\n{container.output()}")


def stop(container: Container) -> int:
    if container.process.poll() is None:
        container.process.send_signal(signal.SIGTERM)
        try:
            container.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            container.process.kill()
            container.process.wait()
    return container.process.returncode


def test_the_start_period_covers_migrations_and_uvicorn_limits_are_set(dockerfile):
    final = dockerfile[-1]
    start_period = final.healthcheck_options["start-period"]
    assert start_period.endswith("s") and int(start_period[:-1]) >= 120
    command = " ".join(final.cmd)
    for option in ("--timeout-keep-alive", "--limit-concurrency", "--timeout-graceful-shutdown"):
        assert option in command
    assert final.user not in (None, "root", "0")
    kept = {path for path in CONTEXT_PROBES if in_build_context(path)}
    assert kept == {"pyproject.toml", "uv.lock", "alembic.ini", "app/main.py", "migrations/env.py"}


CONTEXT_PROBES = (
    ".venv/bin/python",
    ".git/HEAD",
    "clients/typescript/node_modules/openapi-fetch/package.json",
    "rankframe.db",
    "app/__pycache__/main.cpython-312.pyc",
    "tests/conftest.py",
    "pyproject.toml",
    "uv.lock",
    "alembic.ini",
    "app/main.py",
    "migrations/env.py",
)


def in_build_context(path: str) -> bool:
    """.dockerignore's rules (the last matching pattern wins; `!` keeps): does `path` go
    into the build context?"""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    kept = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
        deep = rule.lstrip("!").startswith("**/")
        candidates = prefixes + (parts if deep else [])
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            kept = negated
    return kept


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_the_image_command_migrates_serves_and_answers_as_an_unprivileged_user(
    image, backend, tmp_path
):
    async with fresh_database("postgres" if backend == "postgres" else "sqlite", tmp_path) as url:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{image.path('/data')}/rankframe-{os.getpid()}.db"
        container = start(image, DATABASE_URL=url, ADMIN_TOKEN=ADMIN_TOKEN, WEB_CONCURRENCY="2")
        try:
            await asyncio.to_thread(wait_healthy, image, container)
            async with httpx.AsyncClient(base_url=container.url, timeout=30) as client:
                assert (await client.get("/readyz")).status_code == 200
                created = await client.post(
                    "/v1/admin/accounts",
                    json={"email": "smoke@example.com"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                assert created.status_code == 201, created.text
                key = created.json()["api_key"]["key"]
                balance = await client.get(
                    "/v1/balance", headers={"Authorization": f"Bearer {key}"}
                )
                assert balance.status_code == 200 and balance.json()["available"] == 0
                metrics = await client.get("/metrics")
                assert "rankframe_http_requests_total" in metrics.text
            assert await schema_revision(url) == head_revision()
        finally:
            code = await asyncio.to_thread(stop, container)
        assert code == 0, container.output()
        # The code directory stayed as built: the service wrote only where it may.
        assert not await asyncio.to_thread(lambda: list(Path(image.path("/srv")).rglob("*.db")))


def head_revision() -> str:
    from app.__main__ import _head_revisions

    [head] = _head_revisions()
    return head


async def schema_revision(url: str) -> str:
    if url.startswith("sqlite"):
        import sqlite3

        path = make_url(url).database
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )
    try:
        return await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ADMIN_TOKEN": ADMIN_TOKEN}, "DATABASE_URL is required in production"),
        ({"DATABASE_URL": "sqlite+aiosqlite:////data/x.db"}, "ADMIN_TOKEN is required"),
        (
            {"DATABASE_URL": "sqlite+aiosqlite:////data/x.db", "ADMIN_TOKEN": "short"},
            "ADMIN_TOKEN must be at least 32",
        ),
    ],
)
def test_production_refuses_to_start_without_its_settings(image, env, message):
    env = {k: v.replace("////data/", f"///{image.path('/data')}/") for k, v in env.items()}
    container = start(image, **env)
    try:
        code = container.process.wait(timeout=60)
    finally:
        stop(container)
    assert code == 2
    lines = container.output().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not Path(image.path("/data/x.db")).exists()


def test_past_the_concurrency_limit_requests_get_503_not_a_pile_up(image, tmp_path):
    """Slow clients (headers never finished) hold connections; past
    `--limit-concurrency`, a worker answers 503 at once instead of taking more work."""
    limit = 8
    url = f"sqlite+aiosqlite:///{image.path('/data')}/limit-{os.getpid()}.db"
    container = start(
        image,
        DATABASE_URL=url,
        ADMIN_TOKEN=ADMIN_TOKEN,
        WEB_CONCURRENCY="1",
        UVICORN_LIMIT_CONCURRENCY=str(limit),
    )
    slow: list[socket.socket] = []
    try:
        wait_healthy(image, container)
        assert httpx.get(f"{container.url}/healthz").status_code == 200
        for _ in range(limit):
            connection = socket.create_connection(("127.0.0.1", container.port))
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(connection)
        time.sleep(0.5)
        answer = httpx.get(f"{container.url}/healthz", timeout=5)
        assert answer.status_code == 503
        for connection in slow:
            connection.close()
        slow.clear()
        deadline = time.monotonic() + 10
        while httpx.get(f"{container.url}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the slots never came back"
            time.sleep(0.2)
    finally:
        for connection in slow:
            connection.close()
        stop(container)
        with_file = Path(make_url(url).database or "")
        with_file.unlink(missing_ok=True)
