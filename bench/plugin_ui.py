"""The plugin UI's purchase latency: from the Pay click on the (stand-in) Polar checkout page
to the badge showing the new balance, in Chromium, over 20 purchases; and the README's
screenshots.

    .venv/bin/python -m bench.plugin_ui                     # figures
    .venv/bin/python -m bench.plugin_ui --screenshots docs/screenshots

Starts the service (two uvicorn processes: the plugin talks to one, Polar's webhooks reach the
other) on a fresh PostgreSQL database, the stand-in Polar and Claude, builds and serves
clients/plugin-ui/dist, and drives it with playwright-core (`scripts/setup-clients.sh`
first). The same-run baseline is the webhook leg alone: the stand-in Polar's `order.paid`
POST until the service answered; the rest of each sample is the balance stream and the
browser.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from tests.clients.live import CLIENTS, npm, running_live_service, static_site
from tests.databases import fresh_database

UI = CLIENTS / "plugin-ui"
ROOT = Path(__file__).resolve().parent.parent


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least `fraction` of them at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_node(script: str, env: dict[str, str]) -> dict:
    node = shutil.which("node")
    assert node, "node is required (scripts/setup-clients.sh)"
    run = subprocess.run(
        [node, script], cwd=UI, env=env, capture_output=True, text=True, timeout=900
    )
    if run.returncode != 0:
        raise SystemExit(run.stdout + run.stderr)
    return json.loads(run.stdout.strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purchases", type=int, default=20)
    parser.add_argument("--screenshots", type=Path, help="also write the README's pictures here")
    args = parser.parse_args()

    build = npm("plugin-ui", "run", "build")
    if build.returncode != 0:
        raise SystemExit(build.stdout + build.stderr)
    async with fresh_database("postgres", Path("/tmp")) as url:
        from tests.databases import run_alembic

        await run_alembic(url, ("upgrade", "head"))
        with (
            running_live_service(url, webhook_instance=True) as service,
            static_site(UI / "dist") as ui_url,
        ):
            env = {
                **service.node_env(),
                "PLUGIN_UI_URL": ui_url,
                "PURCHASES": str(args.purchases),
                "CHROMIUM_PATH": os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium",
            }
            result = run_node("bench/purchase-latency.mjs", env)
            webhook_ms = [s * 1000 for s in service.polar.webhook_seconds]
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                shots = run_node(
                    "bench/screenshots.mjs",
                    {**env, "SCREENSHOTS_DIR": str(args.screenshots.resolve())},
                )
                print(f"screenshots written to {shots['screenshots']}")
    samples = result["samples_ms"]
    print(f"purchases: {len(samples)} (one first-time offer, then the smaller tier)")
    print(
        "Pay click -> badge shows the new balance: "
        f"p50 {statistics.median(samples):.0f} ms, p95 {percentile(samples, 0.95):.0f} ms, "
        f"max {max(samples):.0f} ms"
    )
    print(
        "baseline, the webhook leg alone (order.paid POST -> 202): "
        f"p50 {statistics.median(webhook_ms):.0f} ms, p95 {percentile(webhook_ms, 0.95):.0f} ms"
    )
    print("samples (ms):", " ".join(f"{s:.0f}" for s in samples))


if __name__ == "__main__":
    asyncio.run(main())
