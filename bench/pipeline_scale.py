"""The whole graph at several data sizes: seconds, rows, rows per second, growth and peak memory per stage.

    python bench/pipeline_scale.py [--scales 1 4] [--customers 5000] [--days 180]

Each scale runs `make demo`'s stages (fti_assets.demo.run_demo) on the simulator with
``customers x scale`` customers, in a process of its own (peak RSS is that process's). In the same
process, after the graph, DuckDB alone computes the same feature rows from the same raw parquet and
writes them (the floor the feature stage is compared with). The report gives, per stage, the growth
exponent between consecutive scales: log(time ratio) / log(rows ratio); 1.0 is linear.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES_STAGE = "features_job"


def duckdb_floor(lake: Path, out: Path, active_window_days: int) -> tuple[float, int]:
    """Per customer and day, the feature values of customer_features, in one DuckDB statement (signup days
    in UTC here, in the source's time zone in the project: the same work, a floor for its time)."""
    import duckdb

    from fti_assets.features.transform import WINDOWS

    longest = max(active_window_days, *WINDOWS)
    windows = ",\n".join(
        f"coalesce(sum(spend) FILTER (WHERE day > as_of - {w}), 0) AS spend_sum_{w}d, "
        f"coalesce(sum(n) FILTER (WHERE day > as_of - {w}), 0) AS txn_count_{w}d"
        for w in WINDOWS
    )
    means = ", ".join(f"coalesce(spend_sum_{w}d / nullif(txn_count_{w}d, 0), 0) AS spend_mean_{w}d" for w in WINDOWS)
    started = time.perf_counter()
    con = duckdb.connect()
    rows = con.execute(
        f"""
        COPY (
            WITH daily AS (
                SELECT customer_id, CAST(day AS DATE) AS day, sum(amount) AS spend, count(*) AS n
                FROM read_parquet('{lake}/raw_transactions/*.parquet') GROUP BY 1, 2
            ), days AS (SELECT DISTINCT day AS as_of FROM daily),
            agg AS (
                SELECT d.customer_id, a.as_of, {windows}, max(d.day) AS last_day, min(d.day) AS first_day
                FROM days a JOIN daily d ON d.day <= a.as_of AND d.day > a.as_of - {longest}
                GROUP BY 1, 2 HAVING max(d.day) > a.as_of - {active_window_days}
            )
            SELECT agg.*, {means}, datediff('day', last_day, as_of) AS days_since_last_purchase,
                   greatest(datediff('day', coalesce(CAST(c.signup_date AS DATE), first_day), as_of), 0) AS tenure_days
            FROM agg LEFT JOIN read_parquet('{lake}/raw_customers.parquet') c USING (customer_id)
        ) TO '{out}' (FORMAT parquet)
        """
    ).fetchone()[0]
    con.close()
    return time.perf_counter() - started, int(rows)


def one_scale(customers: int, days: int) -> dict:
    from fti_assets.demo import run_demo
    from fti_assets.settings import DEFAULT_CONFIG, load_settings
    from fti_assets_tests.conftest import dagster_instance

    with tempfile.TemporaryDirectory() as tmp:
        first = date(2026, 1, 1)
        settings = load_settings(
            DEFAULT_CONFIG,
            data_dir=tmp,
            simulator={"n_customers": customers, "days": days, "start": first.isoformat(), "seed": 7},
            start_date=first.isoformat(),
            end_date=(first + timedelta(days=days - 1)).isoformat(),
        )
        instance = dagster_instance(Path(tmp, "dagster_home"))
        stage_peaks: dict[str, float] = {}

        def progress(line: str) -> None:
            print(f"    {line}", flush=True)
            if " done in " in line:  # the process's high-water mark as each stage ends
                stage_peaks[line.split("]")[0].lstrip("[")] = peak_rss_gb()

        seen = run_demo(settings, instance, fresh=True, out=progress)
        instance.dispose()
        floor_seconds, floor_rows = duckdb_floor(
            settings.path("lake"), Path(tmp, "floor.parquet"), settings.active_window_days
        )
    return {
        "customers": customers,
        "stage_seconds": seen["_stage_seconds"],
        "stage_rows": seen["_stage_rows"],
        "total_seconds": seen["_total_seconds"],
        "floor_seconds": floor_seconds,
        "floor_rows": floor_rows,
        "feature_rows": seen["customer_features"]["dagster/row_count"],
        "peak_rss_gb": peak_rss_gb(),
        "stage_peak_rss_gb": stage_peaks,
    }


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"\n{r['customers']:,} customers: total {r['total_seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB; "
            f"feature rows {r['feature_rows']:,}, DuckDB alone {r['floor_seconds']:.1f} s for {r['floor_rows']:,} "
            f"rows: features stage {r['stage_seconds'][FEATURES_STAGE] / r['floor_seconds']:.1f}x the floor"
        )
        lines.append("| stage | seconds | rows | rows/s | peak RSS after it, GB |")
        lines.append("|---|---|---|---|---|")
        for stage, seconds in r["stage_seconds"].items():
            rows = r["stage_rows"][stage]
            peak = r["stage_peak_rss_gb"][stage]
            lines.append(f"| {stage} | {seconds:.1f} | {rows:,} | {rows / max(seconds, 1e-9):,.0f} | {peak:.2f} |")
    for a, b in zip(results, results[1:], strict=False):
        lines.append(f"\ngrowth {a['customers']:,} -> {b['customers']:,} customers (exponent: 1.0 is linear)")
        lines.append("| stage | time ratio | rows ratio | exponent |")
        lines.append("|---|---|---|---|")
        for stage in a["stage_seconds"]:
            t = b["stage_seconds"][stage] / max(a["stage_seconds"][stage], 1e-9)
            n = b["stage_rows"][stage] / max(a["stage_rows"][stage], 1)
            exponent = math.log(t) / math.log(n) if n > 1 and t > 0 else float("nan")
            lines.append(f"| {stage} | {t:.2f} | {n:.2f} | {exponent:.2f} |")
        memory = b["peak_rss_gb"] / a["peak_rss_gb"]
        lines.append(f"| peak RSS | {memory:.2f} | {b['customers'] / a['customers']:.2f} (customers) | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 4])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one scale, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_scale(args.one, args.days)))
        return 0
    results = []
    for scale in args.scales:
        customers = int(args.customers * scale)
        print(f"scale {scale:g}: {customers:,} customers x {args.days} days", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(customers), "--days", str(args.days)],
            capture_output=True,
            text=True,
            check=False,
        )
        found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not found:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            return 1
        results.append(json.loads(found[-1].removeprefix("RESULT ")))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
