"""Synthetic customer-churn source data for a retailer.

The simulation is fully vectorised over a customers x days grid: every customer
gets a latent purchase rate, spend level and daily churn hazard; purchases are
Poisson counts on the days the customer is active (signed up, not yet churned).
The result deliberately looks like a raw operational source: its own column
names and a small share of dirty rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import DateTime, create_engine

COUNTRIES = (
    "United Kingdom",
    "Germany",
    "France",
    "Netherlands",
    "Ireland",
    "Spain",
    "Belgium",
    "Australia",
)
COUNTRY_WEIGHTS = (0.55, 0.10, 0.09, 0.06, 0.06, 0.05, 0.05, 0.04)

SEGMENTS = ("consumer", "small_business", "enterprise")
SEGMENT_WEIGHTS = (0.70, 0.22, 0.08)
# Per segment: mean daily purchase rate, gamma shape of that rate, median basket
# value, lognormal sigma of the spend level, and baseline daily churn hazard.
RATE_MEAN = np.array([0.09, 0.16, 0.30])
RATE_SHAPE = np.array([2.0, 2.0, 2.5])
SPEND_MEDIAN = np.array([35.0, 140.0, 600.0])
SPEND_SIGMA = np.array([0.55, 0.60, 0.70])
BASE_HAZARD = np.array([0.003, 0.002, 0.001])

# Monday..Sunday; normalised to mean 1 so the weekly pattern does not change volume.
WEEKLY_PATTERN = np.array([0.92, 0.95, 0.97, 1.00, 1.08, 1.15, 0.93])
WEEKLY_PATTERN = WEEKLY_PATTERN / WEEKLY_PATTERN.mean()

PRE_PERIOD_SIGNUP_SHARE = 0.6
PRE_PERIOD_DAYS = 730
BASKET_SIGMA = 0.4
OPEN_SECONDS, CLOSE_SECONDS = 7 * 3600, 22 * 3600
FUTURE_YEAR = 2099
SQL_CHUNKSIZE = 10_000


@dataclass(frozen=True)
class DriftSpec:
    """From day index `from_day` (0-based from start) on, scale spend, purchase rates and churn hazards."""

    from_day: int
    spend_multiplier: float = 1.0
    frequency_multiplier: float = 1.0
    churn_multiplier: float = 1.0


@dataclass(frozen=True)
class SimulatedSource:
    """Raw source tables plus the number of dirty rows injected into `transactions`."""

    customers: pd.DataFrame
    transactions: pd.DataFrame
    bad_rows: int


def _day_multipliers(days: int, drift: DriftSpec | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spend = np.ones(days)
    frequency = np.ones(days)
    churn = np.ones(days)
    if drift is not None:
        after = np.arange(days) >= drift.from_day
        spend[after] = drift.spend_multiplier
        frequency[after] = drift.frequency_multiplier
        churn[after] = drift.churn_multiplier
    return spend, frequency, churn


def _customers(rng: np.random.Generator, n: int, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw segment, country and signup day index (negative = before start)."""
    segment = rng.choice(len(SEGMENTS), size=n, p=SEGMENT_WEIGHTS)
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS)
    pre_period = rng.random(n) < PRE_PERIOD_SIGNUP_SHARE
    signup_day = np.where(
        pre_period,
        -rng.integers(1, PRE_PERIOD_DAYS + 1, size=n),
        rng.integers(0, days, size=n),
    )
    return segment, country, signup_day


def _inject_bad_rows(rng: np.random.Generator, txns: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, int]:
    """Corrupt a disjoint sample of rows and append exact duplicates; return the frame and the count.

    Kinds: exact duplicate, missing cust_id, non-finite total, timestamp in year 2099.
    """
    n = len(txns)
    n_bad = int(round(fraction * n))
    if fraction > 0 and n >= 1000:
        n_bad = max(n_bad, 4)  # guarantee every kind is present on realistic sizes
    n_bad = min(n_bad, n)
    if n_bad == 0:
        return txns, 0
    # Split as evenly as possible across the four kinds: dup, missing id, non-finite, future.
    sizes = np.full(4, n_bad // 4)
    sizes[: n_bad % 4] += 1
    picked = rng.choice(n, size=n_bad, replace=False)
    dup_idx, missing_idx, nonfinite_idx, future_idx = np.split(picked, np.cumsum(sizes)[:-1])

    txns = txns.copy()
    txns.loc[missing_idx, "cust_id"] = pd.NA
    txns.loc[nonfinite_idx, "total"] = np.where(np.arange(len(nonfinite_idx)) % 2 == 0, np.nan, np.inf)
    ts = txns.loc[future_idx, "purchased_at"]
    txns.loc[future_idx, "purchased_at"] = pd.to_datetime(
        pd.DataFrame(
            {
                "year": FUTURE_YEAR,
                "month": ts.dt.month,
                "day": ts.dt.day.clip(upper=28),  # 2099 is not a leap year
                "hour": ts.dt.hour,
                "minute": ts.dt.minute,
                "second": ts.dt.second,
            }
        )
    )
    txns = pd.concat([txns, txns.loc[dup_idx]], ignore_index=True)
    txns = txns.sort_values("purchased_at", kind="stable", ignore_index=True)
    return txns, n_bad


def simulate(
    n_customers: int = 5000,
    days: int = 180,
    start: date = date(2026, 1, 1),
    seed: int = 42,
    drift: DriftSpec | None = None,
    bad_row_fraction: float = 0.005,
    purchase_rate_multiplier: float = 1.0,
) -> SimulatedSource:
    """Simulate the retailer's `customers` and `transactions` source tables; deterministic for a seed.

    Customers who signed up before `start` are all alive at `start`; churn is a
    daily hazard from max(signup, start) on, and a churned customer never buys again.
    """
    if n_customers < 1 or days < 1:
        raise ValueError("n_customers and days must be positive")
    if drift is not None and drift.from_day < 0:
        raise ValueError("drift.from_day must be >= 0")
    if not 0 <= bad_row_fraction < 1:
        raise ValueError("bad_row_fraction must be in [0, 1)")
    if purchase_rate_multiplier <= 0:
        raise ValueError("purchase_rate_multiplier must be positive")

    # Independent streams, so e.g. a frequency drift does not reshuffle churn or customer draws.
    rng_cust, rng_latent, rng_churn, rng_buy, rng_bad = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    spend_mult, freq_mult, churn_mult = _day_multipliers(days, drift)
    segment, country, signup_day = _customers(rng_cust, n_customers, days)

    rate = rng_latent.gamma(RATE_SHAPE[segment], RATE_MEAN[segment] / RATE_SHAPE[segment])
    spend_level = np.exp(rng_latent.normal(np.log(SPEND_MEDIAN[segment]), SPEND_SIGMA[segment]))
    # Frequent buyers are more engaged and churn less.
    engagement = np.clip(np.sqrt(RATE_MEAN[segment] / rate), 0.25, 4.0)
    hazard = BASE_HAZARD[segment] * engagement

    day = np.arange(days)
    exposed = day[None, :] >= np.maximum(signup_day, 0)[:, None]
    cum_hazard = np.cumsum(hazard[:, None] * churn_mult[None, :] * exposed, axis=1)
    threshold = rng_churn.exponential(size=n_customers)
    churns = cum_hazard[:, -1] >= threshold
    churn_day = np.where(churns, np.argmax(cum_hazard >= threshold[:, None], axis=1), days)
    active = exposed & (day[None, :] < churn_day[:, None])

    weekday = (start.weekday() + day) % 7
    # The multiplier thins (or thickens) purchases without changing who churns: a sparse long-history shop.
    lam = (rate * purchase_rate_multiplier)[:, None] * (WEEKLY_PATTERN[weekday] * freq_mult)[None, :] * active
    counts = rng_buy.poisson(lam)
    cust_idx, day_idx = np.nonzero(counts)
    reps = counts[cust_idx, day_idx]
    cust_idx = np.repeat(cust_idx, reps)
    day_idx = np.repeat(day_idx, reps)
    n_txn = len(cust_idx)

    seconds = rng_buy.integers(OPEN_SECONDS, CLOSE_SECONDS, size=n_txn)
    basket = rng_buy.lognormal(0.0, BASKET_SIGMA, size=n_txn)
    total = np.maximum(np.round(spend_level[cust_idx] * basket * spend_mult[day_idx], 2), 0.01)

    start_ts = np.datetime64(start, "ns")
    one_day = np.timedelta64(1, "D")
    purchased_at = start_ts + day_idx * one_day + seconds * np.timedelta64(1, "s")
    order = np.argsort(purchased_at, kind="stable")
    txns = pd.DataFrame(
        {
            "txn_id": "T" + pd.Series(np.arange(1, n_txn + 1)).astype(str).str.zfill(9),
            "cust_id": pd.array(cust_idx[order] + 1, dtype="Int64"),
            "purchased_at": purchased_at[order],
            "total": total[order],
        }
    )
    txns, bad_rows = _inject_bad_rows(rng_bad, txns, bad_row_fraction)

    customers = pd.DataFrame(
        {
            "customer_id": np.arange(1, n_customers + 1, dtype=np.int64),
            "country": np.array(COUNTRIES, dtype=object)[country],
            "segment": np.array(SEGMENTS, dtype=object)[segment],
            "signup_date": start_ts + signup_day * one_day,
            "churned_on": pd.Series(start_ts + churn_day * one_day).where(churns),
        }
    )
    return SimulatedSource(customers=customers, transactions=txns, bad_rows=bad_rows)


def write_source(
    url: str,
    source: SimulatedSource,
    customers_table: str = "customers",
    transactions_table: str = "transactions",
    until: date | None = None,
) -> None:
    """Write both source tables through SQLAlchemy in one transaction, replacing existing tables.

    With ``until``, only transactions before that day are written: the rest "arrives" later
    through `append_transactions` (the drift demo).
    """
    transactions = source.transactions
    if until is not None:
        transactions = transactions[transactions["purchased_at"] < pd.Timestamp(until)]
    _write(url, [(source.customers, customers_table), (transactions, transactions_table)], "replace")


def append_transactions(
    url: str, source: SimulatedSource, since: date, until: date, transactions_table: str = "transactions"
) -> int:
    """Append the simulated transactions of the days [since, until) to the source; returns the row count."""
    at = source.transactions["purchased_at"]
    rows = source.transactions[(at >= pd.Timestamp(since)) & (at < pd.Timestamp(until))]
    _write(url, [(rows, transactions_table)], "append")
    return len(rows)


def _write(url: str, tables: list[tuple[pd.DataFrame, str]], if_exists: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for df, table in tables:
                datetime_cols = {c: DateTime() for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])}
                df.to_sql(
                    table,
                    con=conn,
                    if_exists=if_exists,
                    index=False,
                    chunksize=SQL_CHUNKSIZE,
                    dtype=datetime_cols,
                )
    finally:
        engine.dispose()
