"""Pure standardization of source rows into the project's transaction and customer schemas.

Every row read is either accepted or quarantined with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from fti_assets.settings import CustomerColumns, TransactionColumns

TRANSACTION_COLUMNS = ["transaction_id", "customer_id", "ts", "day", "amount", "country"]
CUSTOMER_COLUMNS = ["customer_id", "country", "segment", "signup_date"]

# Checked in this order; a row gets the first reason that applies.
QUARANTINE_REASONS = (
    "missing_transaction_id",
    "missing_customer_id",
    "unparsable_timestamp",
    "future_timestamp",
    "non_finite_amount",
    "non_positive_amount",
    "duplicate_transaction_id",
)


@dataclass(frozen=True)
class StandardizedBatch:
    """Result of standardizing one read. ``unplaceable`` rows have no usable timestamp, so no day."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_read: int

    @property
    def reason_counts(self) -> dict[str, int]:
        counts = self.quarantined["reason"].value_counts()
        return {reason: int(counts.get(reason, 0)) for reason in QUARANTINE_REASONS}


def normalize_ids(values: pd.Series) -> pd.Series:
    """Ids as trimmed strings; '17850.0' (an int that went through a float column) becomes '17850'."""
    text = values.astype("string").str.strip()
    text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return text.mask(text.isin(["", "nan", "NaN", "None", "<NA>"]))


def parse_timestamps(values: pd.Series, timezone: str) -> pd.Series:
    """Source timestamps as UTC, microsecond precision. Naive values are local time in ``timezone``."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = pd.to_datetime(values.astype("string"), errors="coerce", format="mixed")
    if parsed.dt.tz is None:
        # DST gaps shift forward and repeated hours take the standard-time reading: a real purchase
        # at such a time is kept, not quarantined for the clock change.
        parsed = parsed.dt.tz_localize(timezone, ambiguous=False, nonexistent="shift_forward")
    return parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _source_amount(frame: pd.DataFrame, expression: str) -> pd.Series:
    if expression in frame.columns:
        values = frame[expression]
    else:
        used = [c for c in frame.columns if str(c) in expression]
        numeric = frame[used].apply(pd.to_numeric, errors="coerce")
        values = numeric.eval(_backtick_columns(expression, numeric.columns))
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _backtick_columns(expression: str, columns: pd.Index) -> str:
    """Let expressions name columns with spaces ('Unit Price * Qty') the way pandas.eval needs them."""
    for name in sorted((c for c in columns if " " in str(c)), key=len, reverse=True):
        expression = expression.replace(str(name), f"`{name}`")
    return expression


def _source_ids(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    parts = [normalize_ids(frame[c]) for c in columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ":" + part  # NA in any part keeps the id NA, so it is quarantined
    return joined


def standardize_transactions(
    frame: pd.DataFrame,
    columns: TransactionColumns,
    timezone: str,
    now: pd.Timestamp,
    day_range: tuple[date, date] | None = None,
) -> StandardizedBatch:
    """Map, type and validate source transactions.

    ``day_range`` = [first, end) keeps only rows whose local day falls inside it (a file source is read
    whole; its other days belong to other partitions). Rows with no usable timestamp cannot be placed
    in any day, so they are always kept, quarantined, with ``day`` empty.
    """
    missing = [c for c in _mapped_source_columns(columns) if c not in frame.columns]
    if missing:
        raise KeyError(f"source has no column(s) {missing}; it has {list(frame.columns)}")
    ts = parse_timestamps(frame[columns.timestamp], timezone)
    out = pd.DataFrame(
        {
            "transaction_id": _source_ids(frame, columns.transaction_id),
            "customer_id": normalize_ids(frame[columns.customer_id]),
            "ts": ts,
            "day": ts.dt.tz_convert(timezone).dt.strftime("%Y-%m-%d").astype("string"),
            "amount": _source_amount(frame, columns.amount),
            "country": frame[columns.country].astype("string") if columns.country else pd.NA,
        },
        index=frame.index,
    )
    out["country"] = out["country"].astype("string")
    if day_range is not None:
        first, end = (d.isoformat() for d in day_range)
        in_range = out["day"].isna() | ((out["day"] >= first) & (out["day"] < end))
        out, frame = out[in_range], frame[in_range]

    reason = pd.Series(pd.NA, index=out.index, dtype="string")

    def flag(mask: pd.Series, why: str) -> None:
        reason[mask.fillna(False).astype(bool) & reason.isna()] = why

    flag(out["transaction_id"].isna(), "missing_transaction_id")
    flag(out["customer_id"].isna(), "missing_customer_id")
    flag(out["ts"].isna(), "unparsable_timestamp")
    flag(out["ts"] > now, "future_timestamp")
    flag(~np.isfinite(out["amount"].fillna(np.inf)), "non_finite_amount")
    flag(out["amount"] <= 0, "non_positive_amount")
    # Only rows that are otherwise valid compete for an id; the first one read wins.
    valid_ids = out.loc[reason.isna(), "transaction_id"]
    flag(valid_ids.duplicated(keep="first").reindex(out.index, fill_value=False), "duplicate_transaction_id")

    bad = reason.notna()
    quarantined = out[bad].copy()
    quarantined["reason"] = reason[bad]
    quarantined["source_row"] = [
        json.dumps(row, default=str) for row in frame[bad].astype(object).to_dict(orient="records")
    ]
    accepted = out[~bad].reset_index(drop=True)
    return StandardizedBatch(
        accepted=accepted[TRANSACTION_COLUMNS],
        quarantined=quarantined.reset_index(drop=True),
        rows_read=len(out),
    )


def _mapped_source_columns(columns: TransactionColumns) -> list[str]:
    names = [*columns.transaction_id, columns.customer_id, columns.timestamp]
    return names + ([columns.country] if columns.country else [])


def standardize_customers(frame: pd.DataFrame, columns: CustomerColumns, timezone: str) -> pd.DataFrame:
    """Customer attributes in the standard schema, one row per customer (the last one read wins)."""
    out = pd.DataFrame({"customer_id": normalize_ids(frame[columns.customer_id])})
    for name in ("country", "segment"):
        source = getattr(columns, name)
        out[name] = frame[source].astype("string") if source else pd.Series(pd.NA, index=frame.index, dtype="string")
    out["signup_date"] = (
        parse_timestamps(frame[columns.signup_date], timezone)
        if columns.signup_date
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    )
    out = out.dropna(subset=["customer_id"]).drop_duplicates("customer_id", keep="last")
    return out[CUSTOMER_COLUMNS].reset_index(drop=True)


def customers_from_transactions(transactions: pd.DataFrame) -> pd.DataFrame:
    """Derive customer attributes when the source has none: first purchase as signup, most frequent country."""
    if transactions.empty:
        return pd.DataFrame(columns=CUSTOMER_COLUMNS)
    grouped = transactions.groupby("customer_id", sort=True)
    out = pd.DataFrame({"signup_date": grouped["ts"].min()})
    countries = transactions.dropna(subset=["country"])
    out["country"] = countries.groupby("customer_id")["country"].agg(lambda s: s.mode().iat[0]).astype("string")
    out["segment"] = pd.Series(pd.NA, index=out.index, dtype="string")
    return out.reset_index()[CUSTOMER_COLUMNS]
