"""Churn labels: a customer in the population on day D churned if they buy nothing in (D, D+horizon]."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from fti_assets.features.transform import active_population, end_of_day_times

LABEL_COLUMNS = ["customer_id", "as_of_day", "event_timestamp", "churned"]


def label_days(first: date, end: date, horizon_days: int, last_complete_day: date | None) -> tuple[date, date]:
    """The days of [first, end) whose whole horizon lies in data that is complete: [first, labelled_end)."""
    if last_complete_day is None:
        return first, first
    return first, max(first, min(end, last_complete_day - timedelta(days=horizon_days) + timedelta(days=1)))


def compute_churn_labels(
    transactions: pd.DataFrame,
    first: date,
    end: date,
    active_window_days: int,
    horizon_days: int,
    timezone: str,
) -> pd.DataFrame:
    """Labels for the as-of days [first, end); ``transactions`` covers the look-back and the horizon."""
    population = active_population(transactions, first, end, active_window_days)
    if population.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    as_of = pd.to_datetime(population["as_of_day"])
    population["customer_id"] = population["customer_id"].astype(str)
    purchases = (
        transactions[["customer_id", "day"]]
        .astype({"customer_id": str})
        .assign(next_day=lambda f: pd.to_datetime(f["day"]))
        .drop_duplicates(["customer_id", "next_day"])
        .sort_values("next_day")
    )
    keyed = population.assign(as_of=as_of).sort_values("as_of")
    # The first purchase day strictly after D; churned when there is none within the horizon.
    joined = pd.merge_asof(
        keyed,
        purchases[["customer_id", "next_day"]],
        left_on="as_of",
        right_on="next_day",
        by="customer_id",
        direction="forward",
        allow_exact_matches=False,
    )
    churned = joined["next_day"].isna() | (joined["next_day"] > joined["as_of"] + pd.Timedelta(days=horizon_days))
    out = pd.DataFrame(
        {
            "customer_id": joined["customer_id"].astype("string"),
            "as_of_day": joined["as_of_day"],
            "event_timestamp": end_of_day_times(joined["as_of"], timezone),
            "churned": churned.astype("int64"),
        }
    )
    return out.sort_values(["as_of_day", "customer_id"]).reset_index(drop=True)
