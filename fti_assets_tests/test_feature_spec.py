"""Features by configuration: equal to a plain SQL statement of their definitions, whole-history values by
hand, no look-ahead, and settings that only add versions."""

from datetime import date

import pandas as pd
import pytest
from pydantic import ValidationError

from fti_assets.features.spec import BUILT_IN_SERVICES, V1, FeatureSpec, ServiceSpec, history_start, merged, suffix
from fti_assets.features.transform import FEATURE_COLUMNS, compute_customer_features, lookback_start

FIRST, END = date(2026, 3, 1), date(2026, 4, 1)


def purchases(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "day", "amount"])


def no_signups(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame(
        {"customer_id": ids, "signup_date": pd.Series([pd.NaT] * len(ids), dtype="datetime64[us, UTC]")}
    )


def sql_reference(transactions, customers, first, end, active_window_days, timezone, spec) -> pd.DataFrame:
    """The definitions as one DuckDB statement (a join of every as-of day with its window's purchase days, an
    ASOF join for the whole history): slow, independent of the vectorised engine, and easy to read."""
    import duckdb

    lookback = max(active_window_days, spec.finite_days)
    finite = sorted({w for w in spec._windows_read() if w != "all"})

    def _window_sql(window: int) -> str:
        last = f"FILTER (WHERE day > as_of - {window})"
        return (
            f"coalesce(sum(spend) {last}, 0.0) AS spend_{window}d, coalesce(sum(n) {last}, 0) AS n_{window}d, "
            f"max(top) {last} AS top_{window}d, count(*) {last} AS days_{window}d"
        )

    con = duckdb.connect()
    con.register("transactions", transactions[["customer_id", "day", "amount"]])
    con.register("customers", customers[["customer_id", "signup_date"]])
    frame = con.execute(
        f"""
        WITH daily AS (
            SELECT customer_id, CAST(day AS DATE) AS day, sum(amount) AS spend, count(*) AS n, max(amount) AS top
            FROM transactions GROUP BY 1, 2
        ), history AS (
            -- Per customer and purchase day, the totals up to that day: what the whole history holds as of any
            -- day until the next purchase.
            SELECT customer_id, day AS last_day, sum(spend) OVER w AS spend_all, sum(n) OVER w AS n_all,
                   max(top) OVER w AS top_all, count(*) OVER w AS days_all, min(day) OVER w AS first_day,
                   day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS last_gap
            FROM daily
            WINDOW w AS (PARTITION BY customer_id ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ), as_of_days AS (
            SELECT CAST(unnest(range(DATE '{first}', DATE '{end}', INTERVAL 1 DAY)) AS DATE) AS as_of
        ), windowed AS (
            SELECT d.customer_id, a.as_of{"".join(f", {_window_sql(w)}" for w in finite)}
            FROM as_of_days a JOIN daily d ON d.day <= a.as_of AND d.day > a.as_of - {lookback}
            GROUP BY d.customer_id, a.as_of
            HAVING max(d.day > a.as_of - {active_window_days})
        )
        SELECT windowed.*, h.* EXCLUDE (customer_id), strftime(windowed.as_of, '%Y-%m-%d') AS as_of_day,
               CAST(timezone('{timezone}', c.signup_date) AS DATE) AS signup_day
        FROM windowed
        ASOF JOIN history h ON windowed.customer_id = h.customer_id AND windowed.as_of >= h.last_day
        LEFT JOIN customers c ON c.customer_id = windowed.customer_id
        ORDER BY windowed.as_of, windowed.customer_id
        """
    ).df()
    con.close()
    as_of, last_day, first_day = (pd.to_datetime(frame[c]) for c in ("as_of", "last_day", "first_day"))
    lifetime = (as_of - first_day).dt.days
    out = {"customer_id": frame["customer_id"].astype("string"), "as_of_day": frame["as_of_day"]}
    prefix = {
        "sum": "spend_sum",
        "mean": "spend_mean",
        "count": "txn_count",
        "max": "spend_max",
        "days": "purchase_days",
    }
    for window in spec.windows:
        spend, count = frame[f"spend_{suffix(window)}"].astype(float).round(4), frame[f"n_{suffix(window)}"]
        values = {
            "sum": spend,
            "mean": (spend / count.where(count > 0)).fillna(0.0).round(4),
            "count": count.astype("int64"),
            "max": frame[f"top_{suffix(window)}"].astype(float).fillna(0.0).round(4),
            "days": frame[f"days_{suffix(window)}"].astype("int64"),
        }
        out.update({f"{prefix[a]}_{suffix(window)}": values[a] for a in spec.aggregates})
    out["days_since_last_purchase"] = (as_of - last_day).dt.days
    out["tenure_days"] = (as_of - pd.to_datetime(frame["signup_day"]).fillna(first_day)).dt.days.clip(lower=0)
    if spec.gaps:
        gaps = frame["days_all"] - 1
        out["days_since_first_purchase"] = lifetime
        out["purchase_gap_mean_days"] = ((last_day - first_day).dt.days / gaps.where(gaps > 0)).fillna(0.0).round(4)
        out["purchase_gap_last_days"] = frame["last_gap"].fillna(0).astype("int64")
        out["expected_purchases_missed"] = (frame["days_all"] / (lifetime + 1) * out["days_since_last_purchase"]).round(
            4
        )
    for short, long in spec.trends:
        before = frame[f"days_{suffix(long)}"] / (lifetime + 1).clip(upper=None if long == "all" else long)
        trend = (frame[f"days_{short}d"] / short / before.where(before > 0)).fillna(0.0).round(4)
        out[f"purchase_trend_{short}d_{suffix(long)}"] = trend
    return pd.DataFrame(out)[["customer_id", "as_of_day", *spec.columns]].astype(
        {c: "int64" for c in spec.integer_columns}
    )


@pytest.mark.parametrize("spec", [V1, FeatureSpec(), FeatureSpec(windows=[14, "all"], trends=[(7, 14), (14, "all")])])
def test_the_engine_equals_a_plain_sql_statement_of_the_definitions(spec):
    from fti_assets.ingestion.standardize import standardize_customers, standardize_transactions
    from fti_assets.settings import load_settings
    from fti_assets.simulate import simulate

    settings = load_settings()
    source = simulate(n_customers=300, days=150, seed=4)
    now = pd.Timestamp.now(tz="UTC")
    transactions = standardize_transactions(source.transactions, settings.source.columns, "UTC", now).accepted
    customers = standardize_customers(source.customers, settings.source.customers, "UTC")
    # Every signup known: where it is not, v1's tenure falls back to the look-back's first purchase, not the
    # whole history's (test_features covers that).
    expected = sql_reference(transactions, customers, FIRST, END, 30, "Europe/London", spec)
    ours = compute_customer_features(transactions, customers, FIRST, END, 30, "Europe/London", spec)
    assert len(expected) > 1000 and list(ours.columns[3:]) == spec.columns
    pd.testing.assert_frame_equal(ours.drop(columns="event_timestamp"), expected, check_exact=True)
    assert V1.columns == FEATURE_COLUMNS


def test_whole_history_aggregates_gaps_and_trend_by_hand():
    log = purchases(
        [
            ("a", "2026-01-01", 10.0),
            ("a", "2026-01-01", 30.0),  # two transactions, one purchase day
            ("a", "2026-01-21", 5.0),
            ("a", "2026-03-10", 20.0),
            ("a", "2026-03-20", 1.0),  # after the as-of day below: never in its values
            ("b", "2026-03-09", 7.0),
        ]
    )
    spec = FeatureSpec(windows=[30, "all"], trends=[(30, "all")])
    features = compute_customer_features(log, no_signups("ab"), date(2026, 3, 15), date(2026, 3, 16), 60, "UTC", spec)
    a = features.set_index("customer_id").loc["a"]
    assert (a["spend_sum_all"], a["txn_count_all"], a["purchase_days_all"]) == (65.0, 4, 3)
    assert (a["spend_mean_all"], a["spend_max_all"]) == (16.25, 30.0)
    assert (a["spend_sum_30d"], a["purchase_days_30d"], a["spend_max_30d"]) == (20.0, 1, 20.0)
    assert a["days_since_last_purchase"] == 5 and a["days_since_first_purchase"] == 73
    assert a["tenure_days"] == 73  # no signup date: the first purchase bounds it
    assert a["purchase_gap_mean_days"] == pytest.approx(68 / 2) and a["purchase_gap_last_days"] == 48
    # 1 purchase day in 30 days against 3 in the 74 days since the first.
    assert a["purchase_trend_30d_all"] == pytest.approx(round((1 / 30) / (3 / 74), 4))
    assert a["expected_purchases_missed"] == pytest.approx(round(3 / 74 * 5, 4))
    b = features.set_index("customer_id").loc["b"]
    # One purchase day: no gap yet; its whole history is 7 days long.
    assert (b["purchase_gap_mean_days"], b["purchase_gap_last_days"], b["days_since_first_purchase"]) == (0.0, 0, 6)
    assert b["purchase_trend_30d_all"] == pytest.approx(round((1 / 30) / (1 / 7), 4))
    assert list(features.columns) == ["customer_id", "event_timestamp", "as_of_day", *spec.columns]
    assert set(spec.integer_columns) < set(spec.columns)
    assert features[spec.integer_columns].dtypes.eq("int64").all()


def test_a_day_never_sees_later_transactions_and_inactive_customers_drop_out():
    log = purchases([("a", "2026-01-05", 10.0), ("a", "2026-02-10", 4.0), ("c", "2026-01-02", 3.0)])
    spec = FeatureSpec()
    first, end = date(2026, 2, 1), date(2026, 2, 15)
    features = compute_customer_features(log, no_signups("ac"), first, end, 30, "UTC", spec)
    with_later = pd.concat([log, purchases([("a", "2026-02-12", 99.0)])])
    later = compute_customer_features(with_later, no_signups("ac"), first, date(2026, 2, 12), 30, "UTC", spec)
    before = features[features["as_of_day"] < "2026-02-12"].reset_index(drop=True)
    pd.testing.assert_frame_equal(later, before)
    # c bought on Jan 2 only: in the 30-day population until Jan 31, so on no day from Feb 1.
    assert set(features["customer_id"]) == {"a"}
    assert features.set_index("as_of_day").loc["2026-02-10", "purchase_days_all"] == 2


def test_whole_history_specs_read_from_the_first_day_of_data():
    assert history_start(FIRST, 30, V1, date(2025, 1, 1)) == lookback_start(FIRST, 30)  # the 90-day window
    assert history_start(FIRST, 30, FeatureSpec(), date(2025, 1, 1)) == date(2025, 1, 1)
    # Only a week's window: the 30-day population decides.
    short = FeatureSpec(windows=[7], gaps=False, trends=[])
    assert history_start(FIRST, 30, short, date(2025, 1, 1)) == date(2026, 1, 31)


@pytest.mark.parametrize(
    "bad",
    [{"windows": [0]}, {"windows": [7, 7]}, {"trends": [(30, 7)]}, {"aggregates": ["median"]}, {"window": [7]}],
)
def test_a_bad_spec_is_refused_with_the_reason(bad):
    with pytest.raises(ValidationError):
        FeatureSpec(**bad)


def test_one_table_holds_every_views_columns():
    v2 = FeatureSpec()
    table = merged([V1, v2, FeatureSpec(windows=[14], aggregates=["max"], gaps=False, trends=[(7, 14)])])
    assert set(V1.columns) | set(v2.columns) | {"spend_max_14d", "purchase_trend_7d_14d"} <= set(table.columns)
    assert merged([V1]) == V1
    assert table.columns[:3] == ["spend_sum_7d", "spend_sum_30d", "spend_sum_90d"]


def test_each_service_of_the_settings_becomes_a_feast_view_and_service(tmp_path):
    from fti_assets.features.spec import DEFAULT_SERVICES, as_config
    from fti_assets.resources.feast import FeastResource
    from fti_assets.settings import PROJECT_ROOT

    v3 = ServiceSpec(view="customer_activity_v3", features=FeatureSpec(windows=[14], aggregates=["max", "days"]))
    services = {**BUILT_IN_SERVICES, **DEFAULT_SERVICES, "customer_churn_v3": v3}
    feast = FeastResource(
        repo_path=str(PROJECT_ROOT / "feature_repo"),
        lake_root=str(tmp_path),
        registry_path=str(tmp_path / "registry.db"),
        feature_services=as_config(services),
    )
    objects = {type(o).__name__ + ":" + o.name: o for o in feast.definitions()}
    for name, service in services.items():
        view = objects[f"FeatureView:{service.view}"]
        assert [f.name for f in view.features] == service.features.columns
        integer = {f.name for f in view.features if str(f.dtype) == "Int64"}
        assert integer == set(service.features.integer_columns)
        assert [p.name for p in objects[f"FeatureService:{name}"].feature_view_projections] == [service.view]
    # v1's contract is what its models were trained on: eleven columns, in this order.
    assert [f.name for f in objects["FeatureView:customer_activity_v1"].features] == FEATURE_COLUMNS
    # Another set of services is another definitions version.
    assert (
        feast.definitions_version()
        != FeastResource(**{**feast.model_dump(), "feature_services": {}}).definitions_version()
    )
