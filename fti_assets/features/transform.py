"""Feature transformations: the only code that turns raw transactions into feature values.

Pure functions over DataFrames (DuckDB runs the window arithmetic in process). A feature row for
customer c as of day D describes c at the end of D and uses no transaction after D.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

WINDOWS = (7, 30, 90)
FEATURE_COLUMNS = [
    *(f"spend_sum_{w}d" for w in WINDOWS),
    *(f"spend_mean_{w}d" for w in WINDOWS),
    *(f"txn_count_{w}d" for w in WINDOWS),
    "days_since_last_purchase",
    "tenure_days",
]
FEATURE_TABLE_COLUMNS = ["customer_id", "event_timestamp", "as_of_day", *FEATURE_COLUMNS]


def end_of_day_utc(day: date, timezone: str) -> pd.Timestamp:
    """The last second of ``day`` in ``timezone``, as a UTC time: the event time of that day's features."""
    local_end = datetime.combine(day + timedelta(days=1), time(), tzinfo=ZoneInfo(timezone)) - timedelta(seconds=1)
    return pd.Timestamp(local_end).tz_convert("UTC")


def end_of_day_times(as_of: pd.Series, timezone: str) -> pd.Series:
    """``end_of_day_utc`` for a column of as-of dates: computed once per distinct day, then taken by code."""
    codes, unique = pd.factorize(pd.to_datetime(as_of))
    # Microseconds: Feast's duckdb offline store cannot materialize nanosecond timestamps.
    ends = pd.DatetimeIndex([end_of_day_utc(d.date(), timezone) for d in unique], dtype="datetime64[us, UTC]")
    return pd.Series(ends.take(codes), index=as_of.index)


def lookback_start(first: date, active_window_days: int) -> date:
    """The first raw day that features (or the population) of day ``first`` read."""
    return first - timedelta(days=max(active_window_days, *WINDOWS) - 1)


def _daily_activity_sql(first: date, end: date, active_window_days: int) -> str:
    """(customer, as_of, day, spend, count) for every purchase day within the window of an as-of day."""
    return f"""
        WITH daily AS (
            SELECT customer_id, CAST(day AS DATE) AS day, sum(amount) AS spend, count(*) AS n
            FROM transactions GROUP BY 1, 2
        ), as_of_days AS (
            SELECT CAST(unnest(range(DATE '{first}', DATE '{end}', INTERVAL 1 DAY)) AS DATE) AS as_of
        )
        SELECT d.customer_id, a.as_of, d.day, d.spend, d.n
        FROM as_of_days a JOIN daily d
          ON d.day <= a.as_of AND d.day > a.as_of - {max(active_window_days, *WINDOWS)}
    """


def active_population(transactions: pd.DataFrame, first: date, end: date, active_window_days: int) -> pd.DataFrame:
    """(customer_id, as_of_day) for customers with a purchase in the ``active_window_days`` up to each day."""
    con = duckdb.connect()
    con.register("transactions", transactions[["customer_id", "day", "amount"]])
    frame = con.execute(
        f"""
        SELECT DISTINCT customer_id, strftime(as_of, '%Y-%m-%d') AS as_of_day
        FROM ({_daily_activity_sql(first, end, active_window_days)})
        WHERE day > as_of - {active_window_days}
        ORDER BY as_of_day, customer_id
        """
    ).df()
    con.close()
    return frame


def compute_customer_features(
    transactions: pd.DataFrame,
    customers: pd.DataFrame,
    first: date,
    end: date,
    active_window_days: int,
    timezone: str,
) -> pd.DataFrame:
    """Rolling per-customer aggregates as of the end of each day in [first, end).

    ``transactions`` must cover the days from ``lookback_start(first, ...)`` to ``end``; rows after an
    as-of day never reach that day's values. Customers enter a day's table after a purchase in the
    last ``active_window_days``; churned customers drop out of it.
    """
    window_sums = ",\n".join(
        f"coalesce(sum(spend) FILTER (WHERE day > as_of - {w}), 0.0) AS spend_sum_{w}d,\n"
        f"coalesce(sum(n) FILTER (WHERE day > as_of - {w}), 0) AS txn_count_{w}d"
        for w in WINDOWS
    )
    con = duckdb.connect()
    con.register("transactions", transactions[["customer_id", "day", "amount"]])
    con.register("customers", customers[["customer_id", "signup_date"]])
    frame = con.execute(
        f"""
        WITH activity AS ({_daily_activity_sql(first, end, active_window_days)}),
        agg AS (
            SELECT customer_id, as_of, {window_sums},
                   max(day) AS last_day, min(day) AS first_day_seen,
                   max(day > as_of - {active_window_days}) AS active
            FROM activity GROUP BY customer_id, as_of
        )
        SELECT agg.*, strftime(as_of, '%Y-%m-%d') AS as_of_day,
               CAST(timezone('{timezone}', c.signup_date) AS DATE) AS signup_day
        FROM agg LEFT JOIN customers c USING (customer_id)
        WHERE active
        ORDER BY as_of, customer_id
        """
    ).df()
    con.close()

    out = pd.DataFrame({"customer_id": frame["customer_id"].astype("string")})
    as_of = pd.to_datetime(frame["as_of"])
    out["as_of_day"] = frame["as_of_day"]
    out["event_timestamp"] = end_of_day_times(as_of, timezone)
    for w in WINDOWS:
        out[f"spend_sum_{w}d"] = frame[f"spend_sum_{w}d"].astype("float64").round(4)
        out[f"txn_count_{w}d"] = frame[f"txn_count_{w}d"].astype("int64")
        count = out[f"txn_count_{w}d"]
        out[f"spend_mean_{w}d"] = (out[f"spend_sum_{w}d"] / count.where(count > 0)).fillna(0.0).round(4)
    out["days_since_last_purchase"] = (as_of - pd.to_datetime(frame["last_day"])).dt.days.astype("int64")
    # Unknown signup: the first purchase seen in the look-back is the best lower bound on tenure.
    signup = pd.to_datetime(frame["signup_day"]).fillna(pd.to_datetime(frame["first_day_seen"]))
    out["tenure_days"] = (as_of - signup).dt.days.clip(lower=0).astype("int64")
    return out[FEATURE_TABLE_COLUMNS].reset_index(drop=True)
