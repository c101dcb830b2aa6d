"""The whole graph at several data sizes: seconds, rows, rows per second, growth and peak memory per stage.

    python bench/pipeline_scale.py [--scales 1 4 16] [--customers 5000] [--days 180] [--sparse]

Each scale runs `make demo`'s stages (fti_assets.demo.run_demo) on the simulator with
``customers x scale`` customers, in a process of its own (peak RSS is that process's). ``--sparse``
adds the shape of a real shop's log: 25,000 customers over 18 months, 3 purchases each on average.
In the same process, after the graph, three floors are timed on the same data:
- features: DuckDB alone computes what the stage computes from the same raw parquet, the feature rows and
  columns (every declared service's) and the churn labels, and writes them; the stage's per-day files,
  checks and events are beyond it. Its rows are then matched with the stage's: the largest difference of
  any feature value, and the labels that differ;
- inference: plain scoring, the champion loaded once, every feature row predicted, written to parquet;
- the point-in-time join: a plain DuckDB ASOF join of the last 30 labelled days to the feature table,
  against the project's join (Feast's semantics) and Feast's own get_historical_features.
The report gives, per stage, the growth exponent between consecutive scales: log(time ratio) /
log(rows ratio); 1.0 is linear.
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


def duckdb_floor(settings, out: Path) -> dict:
    """What the features stage computes, from the raw parquet, each in one DuckDB statement written to parquet:
    the feature table's values (every declared service's columns) per active customer and day, and the churn
    labels of the days whose horizon is complete. A floor for the stage's time. Afterwards, untimed, the floor's
    rows are matched with the stage's: every feature column's largest difference, and labels that differ."""
    import duckdb

    from fti_assets.features.spec import PREFIX, V1, suffix

    spec = settings.feature_table_spec
    lake = settings.path("lake")
    first, end = _day_number(settings.start_date), _day_number(settings.end_date) + 1
    active = settings.active_window_days
    lookback = max(active, V1.finite_days)  # the first purchase in it stands in for an unknown signup
    finite = [w for w in dict.fromkeys([*spec.windows, *(w for pair in spec.trends for w in pair)]) if w != "all"]
    longest = max(lookback, *finite)
    per_window = []
    for w in finite:
        inside = f"d.dn > a.as_of - {w}"
        per_window += [
            f"coalesce(sum(d.spend) FILTER ({inside}), 0) AS spend_{w}",
            f"coalesce(sum(d.n) FILTER ({inside}), 0) AS count_{w}",
            f"coalesce(max(d.top) FILTER ({inside}), 0) AS top_{w}",
            f"count(*) FILTER ({inside}) AS days_{w}",
        ]

    def value(aggregate: str, window) -> str:
        names = ("spend", "count", "top", "days")
        spend, count, top, days = (
            ("run_spend", "run_n", "run_top", "k") if window == "all" else (f"{v}_{window}" for v in names)
        )
        mean = f"CASE WHEN {count} > 0 THEN round(round({spend}, 4) / {count}, 4) ELSE 0 END"
        return {"sum": f"round({spend}, 4)", "mean": mean, "count": count, "max": f"round({top}, 4)", "days": days}[
            aggregate
        ]

    columns = [f"{value(a, w)} AS {PREFIX[a]}_{suffix(w)}" for a in spec.aggregates for w in spec.windows]
    columns += [
        "as_of - last_dn AS days_since_last_purchase",
        "greatest(as_of - coalesce(signup, seen), 0) AS tenure_days",
    ]
    if spec.gaps:
        columns += [
            "as_of - first_dn AS days_since_first_purchase",
            "CASE WHEN k > 1 THEN round((last_dn - first_dn) / (k - 1), 4) ELSE 0 END AS purchase_gap_mean_days",
            "coalesce(last_dn - prev_dn, 0) AS purchase_gap_last_days",
            "round(k / (as_of - first_dn + 1) * (as_of - last_dn), 4) AS expected_purchases_missed",
        ]
    for short, long in spec.trends:
        before = "k / (as_of - first_dn + 1)" if long == "all" else f"days_{long} / least(as_of - first_dn + 1, {long})"
        columns.append(
            f"CASE WHEN {before} > 0 THEN round(days_{short} / {short} / ({before}), 4) ELSE 0 END "
            f"AS purchase_trend_{short}d_{suffix(long)}"
        )
    entry = ["last_dn", "run_spend", "run_n", "run_top", "k", "first_dn", "prev_dn"]
    daily = f"""daily AS (
            SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(day AS DATE) - DATE '1970-01-01' AS dn,
                   sum(amount) AS spend, count(*) AS n, max(amount) AS top
            FROM read_parquet('{lake}/raw_transactions/*.parquet') GROUP BY 1, 2
          )"""
    horizon = settings.label_horizon_days
    labelled_end = max(first, end - horizon)  # the last raw day is the range's last: its horizon ends there
    labels_out = out.with_name("floor_labels.parquet")
    started = time.perf_counter()
    con = duckdb.connect()
    rows = con.execute(
        f"""
        COPY (
          WITH {daily}, history AS (
            SELECT *, sum(spend) OVER w AS run_spend, sum(n) OVER w AS run_n, max(top) OVER w AS run_top,
                   row_number() OVER w AS k, first_value(dn) OVER w AS first_dn, lag(dn) OVER w AS prev_dn,
                   lead(dn) OVER w AS next_dn
            FROM daily WINDOW w AS (PARTITION BY customer_id ORDER BY dn)
          ), active AS (  -- a row per day from each purchase day until the next, the end of activity or the range
            SELECT customer_id, dn AS last_dn, run_spend, run_n, run_top, k, first_dn, prev_dn,
                   unnest(generate_series(greatest(dn, {first}),
                          least(coalesce(next_dn, {end}), dn + {active}, {end}) - 1)) AS as_of
            FROM history WHERE dn < {end} AND dn + {active} > {first}
          ), windowed AS (
            SELECT a.customer_id, a.as_of, {", ".join(per_window)},
                   min(d.dn) FILTER (d.dn > a.as_of - {lookback}) AS seen,
                   {", ".join(f"any_value(a.{c}) AS {c}" for c in entry)}
            FROM active a JOIN daily d
              ON d.customer_id = a.customer_id AND d.dn <= a.as_of AND d.dn > a.as_of - {longest}
            GROUP BY a.customer_id, a.as_of
          )
          SELECT customer_id, as_of, {", ".join(columns)}
          FROM windowed LEFT JOIN (
            SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(signup_date AS DATE) - DATE '1970-01-01' AS signup
            FROM read_parquet('{lake}/raw_customers.parquet')
          ) USING (customer_id)
        ) TO '{out}' (FORMAT parquet)
        """
    ).fetchone()[0]
    features_seconds = time.perf_counter() - started
    # In the active population of a day D, churned when the next purchase day is beyond D + horizon, or none.
    label_rows = con.execute(
        f"""
        COPY (
          WITH {daily}, history AS (
            SELECT customer_id, dn, lead(dn) OVER (PARTITION BY customer_id ORDER BY dn) AS next_dn FROM daily
          ), active AS (
            SELECT customer_id, next_dn,
                   unnest(generate_series(greatest(dn, {first}),
                          least(coalesce(next_dn, {labelled_end}), dn + {active}, {labelled_end}) - 1)) AS as_of
            FROM history WHERE dn < {labelled_end} AND dn + {active} > {first}
          )
          SELECT customer_id, as_of, CAST(coalesce(next_dn > as_of + {horizon}, true) AS INTEGER) AS churned
          FROM active
        ) TO '{labels_out}' (FORMAT parquet)
        """
    ).fetchone()[0]
    seconds = time.perf_counter() - started
    differences = ", ".join(f"max(abs(f.{c} - s.{c})) AS {c}" for c in spec.columns)
    compared = con.execute(
        f"""SELECT count(*) AS matched, {differences}
        FROM read_parquet('{out}') f JOIN read_parquet('{lake}/customer_features/*.parquet') s
        ON f.customer_id = CAST(s.customer_id AS VARCHAR)
           AND CAST(DATE '1970-01-01' + CAST(f.as_of AS INTEGER) AS VARCHAR) = s.as_of_day"""
    ).df()
    labels_compared = con.execute(
        f"""SELECT count(*) AS matched, count(*) FILTER (f.churned != s.churned) AS different
        FROM read_parquet('{labels_out}') f JOIN read_parquet('{lake}/churn_labels/*.parquet') s
        ON f.customer_id = CAST(s.customer_id AS VARCHAR)
           AND CAST(DATE '1970-01-01' + CAST(f.as_of AS INTEGER) AS VARCHAR) = s.as_of_day"""
    ).fetchone()
    con.close()
    largest = compared.drop(columns="matched").iloc[0].astype(float)
    return {
        "seconds": seconds,
        "features_seconds": features_seconds,
        "labels_seconds": seconds - features_seconds,
        "label_rows": int(label_rows),
        "labels_matched": int(labels_compared[0]),
        "labels_different": int(labels_compared[1]),
        "rows": int(rows),
        "columns": len(spec.columns),
        "matched": int(compared["matched"].iloc[0]),
        "largest_difference": float(largest.max()),
        "largest_difference_column": str(largest.idxmax()),
    }


def _day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def plain_scoring(settings, out: Path) -> tuple[float, int]:
    """The champion loaded once, every feature row scored in one call, written to parquet."""
    import duckdb
    import numpy as np

    from fti_assets.definitions import build_resources

    registry = build_resources(settings)["registry"]
    started = time.perf_counter()
    model = registry.load_model(registry.champion().version)
    names = model.metadata.get_input_schema().input_names()
    frame = duckdb.execute(
        f"SELECT customer_id, as_of_day, {', '.join(names)} "
        f"FROM read_parquet('{settings.path('lake', 'customer_features')}/*.parquet')"
    ).df()
    scores = np.asarray(model.predict(frame[names].astype("float64")), dtype="float64")
    frame[["customer_id", "as_of_day"]].assign(score=scores).to_parquet(out, index=False)
    return time.perf_counter() - started, len(frame)


def point_in_time_floor(settings) -> dict:
    """Seconds to join the last 30 labelled days to their features three ways: ours, Feast's, DuckDB's."""
    import duckdb
    import pandas as pd

    from fti_assets.definitions import build_resources

    feast = build_resources(settings)["feast"]
    label_files = sorted(settings.path("lake", "churn_labels").glob("*.parquet"))[-30:]
    entities = pd.concat(pd.read_parquet(p) for p in label_files)[["customer_id", "event_timestamp", "churned"]]
    timings = {"rows": len(entities)}
    started = time.perf_counter()
    feast.historical_features(settings.feature_service, entities)
    timings["ours"] = time.perf_counter() - started
    store = feast.store()
    started = time.perf_counter()
    store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(settings.feature_service)
    ).to_df()
    timings["feast"] = time.perf_counter() - started
    started = time.perf_counter()
    con = duckdb.connect()
    con.register("entities", entities)
    con.execute(
        f"""SELECT e.*, f.* EXCLUDE (customer_id, event_timestamp) FROM entities e
        ASOF LEFT JOIN read_parquet('{settings.path("lake", "customer_features")}/*.parquet') f
        ON CAST(e.customer_id AS VARCHAR) = CAST(f.customer_id AS VARCHAR) AND e.event_timestamp >= f.event_timestamp"""
    ).df()
    con.close()
    timings["duckdb"] = time.perf_counter() - started
    return timings


def one_scale(customers: int, days: int, purchase_rate_multiplier: float = 1.0) -> dict:
    from fti_assets.demo import run_demo
    from fti_assets.settings import DEFAULT_CONFIG, load_settings
    from fti_assets_tests.conftest import dagster_instance

    with tempfile.TemporaryDirectory() as tmp:
        # Every day in the past: the stages run only the days the source has completely (18 months from
        # 2026-01-01 would reach past today).
        first = min(date(2026, 1, 1), date.today() - timedelta(days=days + 1))
        settings = load_settings(
            DEFAULT_CONFIG,
            data_dir=tmp,
            simulator={
                "n_customers": customers,
                "days": days,
                "start": first.isoformat(),
                "seed": 7,
                "purchase_rate_multiplier": purchase_rate_multiplier,
            },
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
        graph_peak = peak_rss_gb()  # before the floors, which load whole tables on purpose
        instance.dispose()
        floor = duckdb_floor(settings, Path(tmp, "floor.parquet"))
        scoring_seconds, scoring_rows = plain_scoring(settings, Path(tmp, "scores.parquet"))
        point_in_time = point_in_time_floor(settings)
        purchases = seen["raw_transactions"]["dagster/row_count"]
    return {
        "customers": customers,
        "days": days,
        "purchases": purchases,
        "scoring_seconds": scoring_seconds,
        "scoring_rows": scoring_rows,
        "point_in_time": point_in_time,
        "stage_seconds": seen["_stage_seconds"],
        "stage_rows": seen["_stage_rows"],
        "total_seconds": seen["_total_seconds"],
        "floor": floor,
        "feature_rows": seen["customer_features"]["dagster/row_count"],
        "label_rows": seen["churn_labels"]["dagster/row_count"],
        "peak_rss_gb": graph_peak,
        "floors_peak_rss_gb": peak_rss_gb(),
        "stage_peak_rss_gb": stage_peaks,
    }


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        stage = r["stage_seconds"]
        inference_per_row = stage["batch_inference_job"] / max(r["stage_rows"]["batch_inference_job"], 1)
        scoring_per_row = r["scoring_seconds"] / max(r["scoring_rows"], 1)
        pit = r["point_in_time"]
        lines.append(
            f"\n{r['customers']:,} customers x {r['days']} days, {r['purchases']:,} purchases: "
            f"total {r['total_seconds']:.1f} s, peak RSS of the graph {r['peak_rss_gb']:.2f} GB "
            f"(with the floors after it: {r['floors_peak_rss_gb']:.2f} GB)"
        )
        floor = r["floor"]
        lines.append(
            f"- features: {r['feature_rows']:,} feature rows and {r['label_rows']:,} labels; DuckDB alone "
            f"{floor['seconds']:.1f} s: {floor['features_seconds']:.1f} s for {floor['rows']:,} rows of the same "
            f"{floor['columns']} columns ({floor['matched']:,} rows matched, largest difference "
            f"{floor['largest_difference']:.4g} in {floor['largest_difference_column']}) and "
            f"{floor['labels_seconds']:.1f} s for {floor['label_rows']:,} labels ({floor['labels_matched']:,} matched, "
            f"{floor['labels_different']:,} different): the features stage takes "
            f"{stage[FEATURES_STAGE] / floor['seconds']:.1f}x"
        )
        lines.append(
            f"- inference: plain scoring {r['scoring_seconds']:.1f} s for {r['scoring_rows']:,} rows: "
            f"batch_inference_job takes {inference_per_row / scoring_per_row:.1f}x per row"
        )
        lines.append(
            f"- point-in-time join of {pit['rows']:,} labels: ours {pit['ours']:.2f} s, Feast "
            f"{pit['feast']:.2f} s, DuckDB ASOF {pit['duckdb']:.2f} s: ours {pit['ours'] / pit['duckdb']:.2f}x "
            f"DuckDB's, Feast {pit['feast'] / pit['duckdb']:.2f}x"
        )
        lines.append("| stage | seconds | rows | rows/s | peak RSS after it, GB |")
        lines.append("|---|---|---|---|---|")
        for name, seconds in stage.items():
            rows = r["stage_rows"][name]
            peak = r["stage_peak_rss_gb"][name]
            lines.append(f"| {name} | {seconds:.1f} | {rows:,} | {rows / max(seconds, 1e-9):,.0f} | {peak:.2f} |")
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


def run_one(customers: int, days: int, purchase_rate_multiplier: float) -> dict | None:
    """One shape in a process of its own, so its peak RSS is its own."""
    done = subprocess.run(
        [sys.executable, __file__, "--one", str(customers), "--days", str(days)]
        + ["--purchase-rate-multiplier", str(purchase_rate_multiplier)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not found:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        return None
    return json.loads(found[-1].removeprefix("RESULT "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="*", default=[1, 4])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--sparse", action="store_true", help="also 25,000 customers, 548 days, 3 purchases each")
    parser.add_argument("--purchase-rate-multiplier", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one shape, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_scale(args.one, args.days, args.purchase_rate_multiplier)))
        return 0
    results = []
    for scale in args.scales:
        customers = int(args.customers * scale)
        print(f"scale {scale:g}: {customers:,} customers x {args.days} days", flush=True)
        if (result := run_one(customers, args.days, 1.0)) is None:
            return 1
        results.append(result)
    text = report(results)
    if args.sparse:
        # 0.087 x the simulator's purchase rates: about 75,000 purchases, 3 per customer, as a real shop's log.
        print("sparse: 25,000 customers x 548 days, about 3 purchases each", flush=True)
        if (sparse := run_one(25_000, 548, 0.087)) is None:
            return 1
        text += "\n\nsparse long-history shape (target: at most 5 minutes)" + report([sparse])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
