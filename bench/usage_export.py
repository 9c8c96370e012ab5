"""Usage and ledger export at 1,000,000 ledger rows (PostgreSQL).

    .venv/bin/python -m bench.usage_export [--rows 1000000]

A scratch database, the service (uvicorn, 2 workers, production settings) and two
accounts: one with `--rows` consumption entries of single generations (and the generation
rows behind them: 4 kinds, 2 sites) spread evenly over the last 365 days, and a baseline
account with 1,000 such rows, measured in the same run. Prints:

- `GET /v1/usage` latency (client side, keep-alive, median and p95 of 30 calls) by day,
  site and kind, over the default 30 days and over 366 days;
- `GET /v1/ledger/export` of the whole ledger: rows, bytes, seconds, and the worker's peak
  resident memory while streaming it, against its resident memory before;
- what the `usage_day` trigger costs a write: pgbench running what a charge locks and
  writes on one hot account (its balance row, then a consumption entry; every insert counts
  into the same `usage_day` row), with the trigger and with it disabled, in the same run.
"""

import argparse
import statistics
import time

import httpx

from bench.common import RssSampler, admin, pgbench, production_service, psql, scratch_database

DATABASE = "rankframe_bench_usage"


def seed(account_id: str, sites: list[str], rows: int) -> None:
    """`rows` succeeded single generations and their consumption entries, evenly over the
    last 365 days, oldest first."""
    psql(
        DATABASE,
        f"""
        INSERT INTO generation (id, account_id, site_id, kind, status, input, output, hold_id,
                                expires_at, credits_charged, model, input_tokens,
                                output_tokens, latency_ms, created_at, completed_at)
        SELECT md5('{account_id}g' || g)::uuid, '{account_id}'::uuid,
               (ARRAY['{sites[0]}', '{sites[1]}'])[1 + g % 2]::uuid,
               (ARRAY['meta_title', 'meta_description', 'alt_text', 'schema'])[1 + g % 4],
               'succeeded', '{{}}'::json, '{{"text": "t"}}'::json,
               md5('{account_id}h' || g)::uuid, now(), 1, 'bench', 800, 20, 500,
               now() - interval '365 days' * (1 - g::float8 / {rows}),
               now() - interval '365 days' * (1 - g::float8 / {rows})
        FROM generate_series(1, {rows}) AS g
        """,
    )
    psql(
        DATABASE,
        f"""
        INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description,
                                  hold_id, generation_id, created_at)
        SELECT gen_random_uuid(), '{account_id}'::uuid, 'consumption', -1, {rows} - g,
               'AI generation: meta title', md5('{account_id}h' || g)::uuid,
               md5('{account_id}g' || g)::uuid,
               now() - interval '365 days' * (1 - g::float8 / {rows})
        FROM generate_series(1, {rows}) AS g
        """,
    )


def account_with_sites(client: httpx.Client, email: str) -> tuple[str, str, list[str]]:
    created = client.post("/v1/admin/accounts", json={"email": email})
    created.raise_for_status()
    account_id, key = created.json()["account"]["id"], created.json()["api_key"]["key"]
    sites = []
    for name in ("a", "b"):
        made = client.post(
            "/v1/sites",
            json={"framer_project_id": name, "name": name},
            headers={"Authorization": f"Bearer {key}"},
        )
        made.raise_for_status()
        sites.append(made.json()["id"])
    return account_id, key, sites


def timed_usage(url: str, key: str, params: dict[str, str], calls: int = 30) -> tuple[float, float]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(3):
            client.get("/v1/usage", params=params).raise_for_status()
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            response = client.get("/v1/usage", params=params)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def export(service, key: str) -> tuple[int, int, float, int, int]:  # type: ignore[no-untyped-def]
    """Rows, bytes, seconds, resident KiB before and peak KiB during the export."""
    with RssSampler(service) as before:
        time.sleep(0.5)
    rows = size = 0
    started = time.perf_counter()
    with (
        RssSampler(service) as during,
        httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=600
        ) as client,
        client.stream("GET", "/v1/ledger/export") as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            rows += chunk.count(b"\n")
    return rows - 1, size, time.perf_counter() - started, before.peak_kib, during.peak_kib


def trigger_cost(account_id: str) -> tuple[float, float, float, float]:
    """(tps, ms) of consumption inserts with the usage trigger, then without it."""
    generation = psql(
        DATABASE, f"SELECT id FROM generation WHERE account_id = '{account_id}' LIMIT 1"
    )
    # Like the charge: the balance row locked, then the entry, in one transaction.
    script = (
        "BEGIN;\n"
        f"UPDATE credit_balance SET updated_at = now() WHERE account_id = '{account_id}';\n"
        "INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description, "
        "hold_id, generation_id, created_at) VALUES (gen_random_uuid(), "
        f"'{account_id}', 'consumption', -1, 0, 'bench', gen_random_uuid(), '{generation}', "
        "now());\n"
        "END;\n"
    )
    counted = pgbench(DATABASE, script, clients=4, seconds=10)
    psql(DATABASE, "ALTER TABLE ledger_entry DISABLE TRIGGER usage_day_count")
    try:
        bare = pgbench(DATABASE, script, clients=4, seconds=10)
    finally:
        psql(DATABASE, "ALTER TABLE ledger_entry ENABLE TRIGGER usage_day_count")
    return (
        counted.requests_per_second,
        counted.p50_ms,
        bare.requests_per_second,
        bare.p50_ms,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with (
        scratch_database(DATABASE),
        production_service(DATABASE, workers=2, DB_POOL_SIZE="5") as service,
    ):
        with admin(service) as client:
            big_id, big_key, big_sites = account_with_sites(client, "big@bench.example")
            small_id, small_key, small_sites = account_with_sites(client, "small@bench.example")
        seed(big_id, big_sites, args.rows)
        seed(small_id, small_sites, 1000)
        psql(DATABASE, "VACUUM ANALYZE")
        psql(DATABASE, "CHECKPOINT")
        print(f"usage (ms, median / p95 of 30 calls), {args.rows:,} vs 1,000 ledger rows")
        for days in (None, "366"):
            for group_by in ("day", "site", "kind"):
                params = {"group_by": group_by}
                if days:
                    today = time.strftime("%Y-%m-%d", time.gmtime())
                    first = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 365 * 86400))
                    params |= {"from": first, "to": today}
                big = timed_usage(service.url, big_key, params)
                small = timed_usage(service.url, small_key, params)
                label = f"{group_by}, {'366 days' if days else 'last 30 days'}"
                print(
                    f"  {label:<22} big {big[0]:7.2f} / {big[1]:7.2f}   "
                    f"baseline {small[0]:6.2f} / {small[1]:6.2f}"
                )
        for label, key in (("baseline (1,000 rows)", small_key), (f"{args.rows:,} rows", big_key)):
            rows, size, seconds, before, peak = export(service, key)
            print(
                f"export {label}: {rows:,} rows, {size / 1e6:.1f} MB in {seconds:.1f} s "
                f"({rows / seconds:,.0f} rows/s); worker RSS {before / 1024:.1f} MiB before, "
                f"peak {peak / 1024:.1f} MiB during (+{(peak - before) / 1024:.1f} MiB)"
            )
        with_tps, with_ms, bare_tps, bare_ms = trigger_cost(small_id)
        print(
            f"charge-like transactions, one hot account (pgbench, 4 clients, 10 s): with the usage "
            f"trigger {with_tps:,.0f} tps ({with_ms:.2f} ms avg), without it {bare_tps:,.0f} tps "
            f"({bare_ms:.2f} ms avg)"
        )


if __name__ == "__main__":
    main()
