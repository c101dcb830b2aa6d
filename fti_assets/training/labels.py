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
    # The next purchase day after D comes with the population: churned when it is beyond the horizon (or none).
    churned = population["next_purchase_day"] > population["as_of"] + horizon_days
    return pd.DataFrame(
        {
            "customer_id": population["customer_id"],
            "as_of_day": population["as_of_day"],
            "event_timestamp": end_of_day_times(population["as_of"].to_numpy(), timezone),
            "churned": churned.astype("int64"),
        },
        columns=LABEL_COLUMNS,
    )
