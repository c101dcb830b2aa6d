"""Tests of the synthetic retailer source (fti_assets.simulate)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, text

from fti_assets.simulate import DriftSpec, SimulatedSource, simulate, write_source

REPO_ROOT = Path(__file__).resolve().parents[1]
START = date(2026, 1, 1)
SMALL = dict(n_customers=300, days=60, start=START)


def _clean(txns: pd.DataFrame) -> pd.DataFrame:
    """Drop every kind of injected bad row."""
    ok = txns["cust_id"].notna() & np.isfinite(txns["total"]) & (txns["purchased_at"].dt.year < 2099)
    return txns[ok].drop_duplicates("txn_id", keep="first")


def _bad_row_counts(txns: pd.DataFrame) -> dict[str, int]:
    return {
        "duplicate": int(txns.duplicated(keep="first").sum()),
        "missing_cust_id": int(txns["cust_id"].isna().sum()),
        "non_finite_total": int((~np.isfinite(txns["total"])).sum()),
        "future_timestamp": int((txns["purchased_at"].dt.year >= 2099).sum()),
    }


@pytest.fixture(scope="module")
def small() -> SimulatedSource:
    return simulate(seed=42, **SMALL)


def test_same_seed_is_deterministic_and_other_seed_differs(small: SimulatedSource) -> None:
    again = simulate(seed=42, **SMALL)
    pd.testing.assert_frame_equal(small.customers, again.customers)
    pd.testing.assert_frame_equal(small.transactions, again.transactions)
    assert small.bad_rows == again.bad_rows

    other = simulate(seed=43, **SMALL)
    assert not small.customers.equals(other.customers)
    assert not small.transactions.equals(other.transactions)


def test_schema_and_dtypes(small: SimulatedSource) -> None:
    customers, txns = small.customers, small.transactions
    assert list(customers.columns) == ["customer_id", "country", "segment", "signup_date", "churned_on"]
    assert customers["customer_id"].dtype == np.int64
    assert customers["customer_id"].tolist() == list(range(1, 301))
    assert pd.api.types.is_string_dtype(customers["country"])
    assert customers["country"].value_counts().index[0] == "United Kingdom"
    assert set(customers["segment"]) == {"consumer", "small_business", "enterprise"}
    assert customers["segment"].value_counts().index[0] == "consumer"
    for col in ("signup_date", "churned_on"):
        assert customers[col].dtype == "datetime64[ns]"

    assert list(txns.columns) == ["txn_id", "cust_id", "purchased_at", "total"]
    assert pd.api.types.is_string_dtype(txns["txn_id"])
    assert txns["txn_id"].str.fullmatch(r"T\d{9}").all()
    assert txns["cust_id"].dtype == "Int64"
    assert txns["purchased_at"].dtype == "datetime64[ns]"
    assert txns["total"].dtype == np.float64
    assert txns["purchased_at"].is_monotonic_increasing


def test_clean_rows_are_plausible(small: SimulatedSource) -> None:
    clean = _clean(small.transactions)
    assert clean["txn_id"].is_unique
    assert (clean["total"] > 0).all()
    cents = clean["total"] * 100
    assert np.allclose(cents, cents.round())
    seconds = clean["purchased_at"] - clean["purchased_at"].dt.normalize()
    assert (seconds >= pd.Timedelta(hours=7)).all() and (seconds < pd.Timedelta(hours=22)).all()
    first, last = pd.Timestamp(START), pd.Timestamp(START) + pd.Timedelta(days=60)
    assert clean["purchased_at"].between(first, last, inclusive="left").all()
    assert clean["cust_id"].isin(small.customers["customer_id"]).all()


def test_signup_split_around_start() -> None:
    customers = simulate(n_customers=5000, days=180, seed=1, bad_row_fraction=0).customers
    before = customers["signup_date"] < pd.Timestamp(START)
    assert 0.55 < before.mean() < 0.65
    assert customers["signup_date"].min() >= pd.Timestamp(START) - pd.Timedelta(days=730)
    assert customers["signup_date"].max() < pd.Timestamp(START) + pd.Timedelta(days=180)


def test_no_purchase_before_signup_or_after_churn(small: SimulatedSource) -> None:
    clean = _clean(small.transactions)
    joined = clean.merge(small.customers, left_on="cust_id", right_on="customer_id", validate="many_to_one")
    assert (joined["purchased_at"] >= joined["signup_date"]).all()
    churned = joined["churned_on"].notna()
    assert churned.any(), "expected some buyers to churn within the period"
    assert (joined.loc[churned, "purchased_at"] < joined.loc[churned, "churned_on"]).all()
    # Churn never predates signup or the start of the period.
    churned_on = small.customers["churned_on"].dropna()
    signup = small.customers.loc[churned_on.index, "signup_date"]
    assert (churned_on >= signup).all() and (churned_on >= pd.Timestamp(START)).all()


def test_bad_rows_of_each_kind_counted_exactly(small: SimulatedSource) -> None:
    txns = small.transactions
    assert len(txns) >= 1000, "fixture too small to require every kind of bad row"
    counts = _bad_row_counts(txns)
    assert all(n >= 1 for n in counts.values()), counts
    assert sum(counts.values()) == small.bad_rows
    # Duplicates repeat the whole row, including txn_id.
    assert txns["txn_id"].duplicated().sum() == counts["duplicate"]
    assert np.isnan(txns["total"]).any() and np.isinf(txns["total"]).any()
    assert small.bad_rows == pytest.approx(0.005 * (len(txns) - counts["duplicate"]), abs=4)


def test_bad_row_fraction_zero_gives_clean_data() -> None:
    source = simulate(seed=42, bad_row_fraction=0, **SMALL)
    assert source.bad_rows == 0
    assert sum(_bad_row_counts(source.transactions).values()) == 0


def test_spend_drift_scales_amounts_after_from_day() -> None:
    base = _clean(simulate(seed=7, **SMALL).transactions)
    drifted = _clean(simulate(seed=7, drift=DriftSpec(from_day=30, spend_multiplier=1.5), **SMALL).transactions)
    cutoff = pd.Timestamp(START) + pd.Timedelta(days=30)

    def ratio(txns: pd.DataFrame) -> float:
        after = txns["purchased_at"] >= cutoff
        return txns.loc[after, "total"].mean() / txns.loc[~after, "total"].mean()

    assert ratio(drifted) / ratio(base) == pytest.approx(1.5, rel=0.01)
    before = base["purchased_at"] < cutoff
    assert drifted.loc[drifted["purchased_at"] < cutoff, "total"].sum() == pytest.approx(
        base.loc[before, "total"].sum()
    )


def test_frequency_drift_scales_purchase_counts_after_from_day() -> None:
    size = dict(n_customers=2000, days=60, start=START)
    cutoff = pd.Timestamp(START) + pd.Timedelta(days=30)

    def after_share(txns: pd.DataFrame) -> float:
        after = (txns["purchased_at"] >= cutoff).sum()
        return after / (len(txns) - after)

    base = _clean(simulate(seed=11, **size).transactions)
    drifted = _clean(simulate(seed=11, drift=DriftSpec(from_day=30, frequency_multiplier=2.0), **size).transactions)
    assert after_share(drifted) / after_share(base) == pytest.approx(2.0, rel=0.1)


def test_purchase_rate_multiplier_thins_purchases_and_keeps_who_churns() -> None:
    size = dict(n_customers=3000, days=365, start=START, seed=4, bad_row_fraction=0)
    base, sparse = simulate(**size), simulate(purchase_rate_multiplier=0.1, **size)
    assert len(sparse.transactions) / len(base.transactions) == pytest.approx(0.1, rel=0.1)
    pd.testing.assert_frame_equal(base.customers, sparse.customers)
    with pytest.raises(ValueError, match="purchase_rate_multiplier"):
        simulate(purchase_rate_multiplier=0, n_customers=10, days=10)


def test_churn_drift_increases_churn() -> None:
    size = dict(n_customers=2000, days=90, start=START)
    base = simulate(seed=5, **size).customers["churned_on"].notna().sum()
    drifted = simulate(seed=5, drift=DriftSpec(from_day=0, churn_multiplier=3.0), **size).customers
    assert drifted["churned_on"].notna().sum() > 2 * base


def test_default_size_churn_label_rate() -> None:
    source = simulate(bad_row_fraction=0)
    txns, customers = source.transactions, source.customers
    day = (txns["purchased_at"] - pd.Timestamp(START)).dt.days
    buyers = customers["customer_id"].isin(txns["cust_id"])
    assert 0.25 < customers.loc[buyers, "churned_on"].notna().mean() < 0.45
    # 30-day churn label as of day 100 among customers with a purchase in the previous 90 days.
    recent = set(txns.loc[day.between(10, 99), "cust_id"])
    next_30 = set(txns.loc[day.between(100, 129), "cust_id"])
    assert 0.10 < len(recent - next_30) / len(recent) < 0.40


def test_write_source_round_trips_and_replaces(tmp_path: Path, small: SimulatedSource) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    write_source(url, simulate(seed=1, n_customers=50, days=10, start=START))
    write_source(url, small)

    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {"customers", "transactions"}
        with engine.connect() as conn:
            n_customers = conn.execute(text("SELECT COUNT(*) FROM customers")).scalar_one()
            n_txns = conn.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one()
            missing_ids = conn.execute(text("SELECT COUNT(*) FROM transactions WHERE cust_id IS NULL")).scalar_one()
        back = pd.read_sql_table("transactions", engine)
    finally:
        engine.dispose()
    assert n_customers == len(small.customers)
    assert n_txns == len(small.transactions)
    assert missing_ids == small.transactions["cust_id"].isna().sum()
    assert back["purchased_at"].dtype == "datetime64[ns]"
    pd.testing.assert_series_equal(back["purchased_at"], small.transactions["purchased_at"])


def test_write_source_custom_table_names(tmp_path: Path, small: SimulatedSource) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    write_source(url, small, customers_table="src_customers", transactions_table="src_txns")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {"src_customers", "src_txns"}
    finally:
        engine.dispose()


def test_cli_creates_database_and_prints_summary(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "source.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fti_assets.simulate",
            "--url",
            f"sqlite:///{db}",
            "--customers",
            "200",
            "--days",
            "30",
            "--start",
            "2026-01-01",
            "--seed",
            "3",
            "--drift-from-day",
            "10",
            "--spend-multiplier",
            "1.2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert db.exists()
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    expected = simulate(
        n_customers=200, days=30, start=START, seed=3, drift=DriftSpec(from_day=10, spend_multiplier=1.2)
    )
    summary = lines[0]
    assert "200 customers" in summary
    assert f"{len(expected.transactions)} transactions" in summary
    assert f"{expected.bad_rows} bad rows" in summary
    assert "2026-01-01 to 2026-01-30" in summary
    assert str(db) in summary

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            n_txns = conn.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one()
    finally:
        engine.dispose()
    assert n_txns == len(expected.transactions)


def test_cli_rejects_multipliers_without_drift_day(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fti_assets.simulate",
            "--url",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--churn-multiplier",
            "2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--drift-from-day" in result.stderr
    assert not (tmp_path / "x.db").exists()
