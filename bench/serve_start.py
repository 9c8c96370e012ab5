"""Time from `bash scripts/serve.sh` to the first `200` from `/healthz` when nothing needs
installing (the lock unchanged), against the same run's baseline: the previous start
sequence (`alembic upgrade head`, then `uvicorn`, two interpreters, two imports) after the
same no-op setup. SQLite in a scratch file, already migrated; the medians of `--runs`.

    .venv/bin/python -m bench.serve_start [--runs 5]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent

BASELINE = (
    "bash scripts/setup.sh && .venv/bin/alembic upgrade head && exec .venv/bin/uvicorn "
    'app.main:app --host 127.0.0.1 --port "$PORT"'
)
SERVE_SH = "exec bash scripts/serve.sh"


def time_to_serving(command: str, env: dict[str, str]) -> float:
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command!r} exited {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite+aiosqlite:///{scratch}/bench.db",
            "LOG_LEVEL": "WARNING",
        }
        subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, check=True)
        time_to_serving(SERVE_SH, env)  # migrates the scratch database, warms the caches
        figures: dict[str, list[float]] = {"baseline (alembic, then uvicorn)": [], "serve.sh": []}
        for _ in range(args.runs):  # interleaved, so load changes hit both alike
            figures["baseline (alembic, then uvicorn)"].append(time_to_serving(BASELINE, env))
            figures["serve.sh"].append(time_to_serving(SERVE_SH, env))
    load = os.getloadavg()[0]
    print(f"restart to first /healthz 200, lock unchanged, {args.runs} runs, load {load:.1f}")
    for name, seconds in figures.items():
        print(
            f"  {name:<34} median {statistics.median(seconds):5.2f} s  "
            f"min {min(seconds):5.2f} s  max {max(seconds):5.2f} s"
        )


if __name__ == "__main__":
    main()
