"""Pure standardization of source rows into the project's transaction and customer schemas.

Every row read is either accepted or quarantined with a reason; nothing is dropped silently. A setting
that does not fit the source (a column that is not there, dates that could be read two ways) is an
error that names the setting, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.tseries.api import guess_datetime_format

from fti_assets.settings import MAX_ID_LENGTH, TIMESTAMP_FORMS, CustomerColumns, TransactionColumns

TRANSACTION_COLUMNS = ["transaction_id", "customer_id", "ts", "day", "amount", "country"]
CUSTOMER_COLUMNS = ["customer_id", "country", "segment", "signup_date"]

# Checked in this order; a row gets the first reason that applies.
QUARANTINE_REASONS = (
    "invalid_encoding",
    "missing_transaction_id",
    "transaction_id_too_long",
    "missing_customer_id",
    "customer_id_too_long",
    "missing_timestamp",
    "unparsable_timestamp",
    "future_timestamp",
    "missing_amount",
    "unparsable_amount",
    "non_finite_amount",
    "amount_too_large",
    "zero_amount",
    "negative_amount",
    "duplicate_transaction_id",
)

# Bytes that were not UTF-8, as the readers keep them (decoded with errors="surrogateescape").
_UNDECODABLE = "[\udc80-\udcff]"
# A numeric date whose day and month can swap: 02/01/1997, 2.1.97, 02-01-1997 10:00.
_NUMERIC_DATE = r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}(?:\D|$)"
# A time followed by a UTC offset: the value is an instant, not a local time of the source.
_OFFSET = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
# Formats tried, one after another, on the numeric dates of a dayfirst/monthfirst column.
_MAX_GUESSED_FORMATS = 8
# Text in Arrow memory: string operations in C, several times faster than Python strings at a million rows.
ARROW_TEXT = pd.StringDtype("pyarrow")


@dataclass(frozen=True)
class StandardizedBatch:
    """Result of standardizing one read.

    ``accepted`` and ``quarantined`` are the read's rows (quarantined rows without a usable time have no
    ``day``). ``beyond_range`` holds future-dated rows of days outside the read's range: no partition will
    ever accept them, so they are quarantined too, but they are not rows of this read.
    """

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_read: int
    beyond_range: pd.DataFrame

    @property
    def reason_counts(self) -> dict[str, int]:
        counts = self.quarantined["reason"].value_counts()
        return {reason: int(counts.get(reason, 0)) for reason in QUARANTINE_REASONS}


def as_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Values as Arrow strings, and the rows whose text held bytes that were not UTF-8 (now written \\xNN)."""
    try:
        return values.astype(ARROW_TEXT), pd.Series(False, index=values.index)
    except UnicodeEncodeError:  # Arrow holds valid UTF-8 only; the readers keep bad bytes as lone surrogates
        text = values.astype("string")
        bad = text.str.contains(_UNDECODABLE, regex=True).fillna(False).astype(bool)
        readable = text[bad].str.encode("utf-8", "surrogateescape").str.decode("utf-8", "backslashreplace")
        return text.mask(bad, readable).astype(ARROW_TEXT), bad


def normalize_ids(values: pd.Series) -> pd.Series:
    """Ids as trimmed strings; '17850.0' (an int that went through a float column) becomes '17850'."""
    text = as_text(values)[0].str.strip()
    whole = pc.replace_substring_regex(pa.array(text.array), r"^(-?\d+)\.0+$", r"\1")
    text = pd.Series(pd.arrays.ArrowStringArray(whole), index=text.index)
    return text.mask(text.isin(["", "nan", "NaN", "None", "<NA>"]))


def parse_timestamps(
    values: pd.Series, timezone: str, timestamp_format: str | None = None, column: str = "timestamp"
) -> pd.Series:
    """Source timestamps as UTC, microsecond precision; what cannot be read is NaT.

    Naive values are local times in ``timezone``; values with a UTC offset are instants, and a column may
    mix both. ``timestamp_format`` is the ``TransactionColumns`` setting; ``column`` names the values in errors.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return _to_utc(values, timezone)
    text = as_text(values)[0]
    if timestamp_format not in (None, *TIMESTAMP_FORMS):
        parsed = pd.to_datetime(text, format=timestamp_format, errors="coerce", utc="%z" in timestamp_format)
        return _to_utc(parsed, timezone)
    parsed = _parse_iso(text, timezone)
    unread = parsed.isna() & text.notna()
    if timestamp_format == "ISO8601" or not unread.any():
        return parsed
    rest = text[unread].str.strip()
    parsed = parsed.fillna(_parse_iso(rest, timezone))
    numeric = rest[rest.str.contains(_NUMERIC_DATE, regex=True)]
    if numeric.empty:
        return parsed
    if timestamp_format is None:
        raise ValueError(
            f"source column {column!r} has {len(numeric)} numeric dates such as {numeric.iloc[0]!r} whose day and "
            f"month can swap: set source.columns.timestamp_format to 'dayfirst', 'monthfirst' or a strftime format "
            f"such as '%d/%m/%Y %H:%M' (or 'ISO8601' to quarantine every value that is not ISO 8601)"
        )
    return parsed.fillna(_to_utc(_parse_numeric_dates(numeric, timestamp_format == "dayfirst"), timezone))


def _parse_iso(text: pd.Series, timezone: str) -> pd.Series:
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if parsed.dtype.kind == "M" and parsed.dt.tz is None:
        return _to_utc(parsed, timezone)  # no value had an offset: the common, fast case
    # pandas gives mixed offsets an object column, and naive values beside an offset that offset: split them.
    instant = text.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
    local = _to_utc(pd.to_datetime(text.where(~instant), format="ISO8601", errors="coerce"), timezone)
    utc = pd.to_datetime(text.where(instant), format="ISO8601", errors="coerce", utc=True)
    return local.where(~instant, utc.astype("datetime64[us, UTC]"))


def _parse_numeric_dates(text: pd.Series, dayfirst: bool) -> pd.Series:
    """Numeric dates in the configured day/month order: a strict format guessed from a value, applied to all
    (vectorised), then the next format for what is left. A value no guessed format reads is NaT."""
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    pending = text
    for _ in range(_MAX_GUESSED_FORMATS):
        if pending.empty:
            break
        form = guess_datetime_format(pending.iloc[0], dayfirst=dayfirst)
        # A guess reads 13/01 day-first even when asked for month-first: such a value is unparsable, not swapped.
        if form and (form.find("%d") < form.find("%m")) != dayfirst:
            form = None
        left = pd.Series(True, index=pending.index)
        if form:
            read = pd.to_datetime(pending, format=form, errors="coerce")
            parsed.loc[read.index] = parsed.loc[read.index].fillna(read)
            left = read.isna()
        left.iloc[0] = False  # the value the format was guessed from leaves either way: each round makes progress
        pending = pending[left]
    return parsed


def _to_utc(parsed: pd.Series, timezone: str) -> pd.Series:
    if parsed.dt.tz is None:
        # DST gaps shift forward and repeated hours take the standard-time reading: a real purchase
        # at such a time is kept, not quarantined for the clock change.
        parsed = parsed.dt.tz_localize(timezone, ambiguous=False, nonexistent="shift_forward")
    return parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def local_days(ts: pd.Series, timezone: str) -> pd.Series:
    """The local calendar day ('YYYY-MM-DD') of each UTC time; NA where there is no time."""
    local = ts.dt.tz_convert(timezone).dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    # Format each distinct day once: a range has hundreds of days and a million rows.
    days, codes = np.unique(local, return_inverse=True)
    names = pa.array(days.astype(str), pa.large_string())
    text = pa.DictionaryArray.from_arrays(pa.array(codes.astype("int32")), names).cast(pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(text), index=ts.index).mask(ts.isna())


def _referenced_columns(expression: str, columns: pd.Index) -> list[str]:
    """Source columns an amount expression names, longest name first ('Unit Price' before 'Price')."""
    found, rest = [], expression
    for name in sorted(map(str, columns), key=len, reverse=True):
        pattern = _name_pattern(name)
        if re.search(pattern, rest):
            found.append(name)
            rest = re.sub(pattern, " ", rest)
    return found


def _name_pattern(name: str) -> str:
    return rf"(?<![\w`]){re.escape(name)}(?![\w`])"


def _source_amount(source: pd.DataFrame, expression: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Amount values, and the rows whose source values were missing or not numbers."""
    used = [expression] if expression in source.columns else _referenced_columns(expression, source.columns)
    raw = source[used]
    numeric = raw.apply(_numbers)
    if used == [expression]:
        values = numeric[expression]
    else:
        quoted = expression
        for name in used:  # longest first, so a name inside a longer one is not quoted twice
            quoted = re.sub(_name_pattern(name), f"`{name}`", quoted)
        try:
            values = numeric.eval(quoted)
        except pd.errors.UndefinedVariableError as error:
            missing = re.search(r"name '(.+?)' is not defined", str(error))
            raise KeyError(
                f"source.columns.amount {expression!r} names {missing.group(1) if missing else 'a column'!r}, "
                f"which is not a source column; the source has {list(source.columns)}"
            ) from None
    missing = raw.isna().any(axis=1)
    unparsable = (numeric.isna() & raw.notna()).any(axis=1)
    return pd.to_numeric(values, errors="coerce").astype("float64"), missing, unparsable


def _numbers(values: pd.Series) -> pd.Series:
    """A source column's numbers; a value that is not a number is NaN."""
    if isinstance(values.dtype, pd.StringDtype):
        try:  # Arrow's cast reads clean number text about 25x faster than pandas
            return pd.Series(pc.cast(pa.array(values.array), pa.float64()).to_numpy(zero_copy_only=False), values.index)
        except pa.ArrowInvalid:
            pass  # some value is not a number: pandas finds which
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _source_ids(source: pd.DataFrame, columns: list[str]) -> pd.Series:
    parts = [normalize_ids(source[c]) for c in columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ":" + part  # NA in any part keeps the id NA, so it is quarantined
    return joined


def content_ids(rows: pd.DataFrame) -> pd.Series:
    """Ids for a source without any: a hash of the row's standardized content, then its occurrence among
    identical rows. Identical rows are interchangeable, so the ids do not depend on the order read."""
    digest = pd.util.hash_pandas_object(rows[["customer_id", "ts", "amount", "country"]], index=False)
    occurrence = digest.groupby(digest, sort=False).cumcount()
    return ("h" + digest.astype(str) + "-" + occurrence.astype(str)).astype(ARROW_TEXT)


def _line_numbers(rows: pd.DataFrame) -> pd.Series:
    """Rank of each row among the rows of its id, in time and amount order: stable whatever the read order."""
    ordered = rows.sort_values(["transaction_id", "ts", "amount", "customer_id"], kind="stable")
    return ordered.groupby("transaction_id", sort=False).cumcount().reindex(rows.index)


def source_rows_json(frame: pd.DataFrame) -> list[str]:
    """Each row as strict JSON (missing values null, infinities "inf", bad bytes \\xNN), for a person to read."""
    if frame.empty:
        return []
    rows = frame.copy()
    for name in rows.columns:
        column = rows[name]
        if pd.api.types.is_float_dtype(column):
            # Whole numbers as integers: an integer column read with a null in the batch is float there and
            # int elsewhere, and the same row must read the same in any run.
            whole = np.isfinite(column) & (column == np.round(column)) & (column.abs() < 2**53)
            text = column.astype(object).where(~np.isinf(column), column.astype(str))
            rows[name] = text.where(~whole, column.where(whole, 0).astype("int64").astype(object))
        elif pd.api.types.is_object_dtype(column) or isinstance(column.dtype, pd.StringDtype):
            rows[name] = as_text(column)[0]
    return rows.to_json(orient="records", lines=True, date_format="iso", double_precision=15).rstrip("\n").split("\n")


def standardize_transactions(
    frame: pd.DataFrame,
    columns: TransactionColumns,
    timezone: str,
    now: pd.Timestamp,
    day_range: tuple[date, date] | None = None,
) -> StandardizedBatch:
    """Map, type and validate source transactions.

    ``day_range`` = [first, end) keeps the rows whose local day falls inside it (a file source is read
    whole; its other days belong to other partitions). Rows with no usable timestamp cannot be placed in
    any day, so they are always kept, quarantined, with ``day`` empty; future-dated rows of other days are
    quarantined in ``beyond_range``. Duplicates are judged over the whole frame, first read wins.
    """
    _require_columns(frame, columns)
    source, encoding = _decoded(frame, _mapped_source_columns(frame, columns))
    ts = parse_timestamps(source[columns.timestamp], timezone, columns.timestamp_format, columns.timestamp)
    amount, amount_missing, amount_unparsable = _source_amount(source, columns.amount)
    out = pd.DataFrame(
        {
            "customer_id": normalize_ids(source[columns.customer_id]),
            "ts": ts,
            "day": local_days(ts, timezone),
            "amount": amount,
            "country": source[columns.country] if columns.country else pd.Series(pd.NA, index=frame.index),
        },
        index=frame.index,
    )
    out["country"] = out["country"].astype(ARROW_TEXT)
    ids = _source_ids(source, columns.transaction_id) if columns.transaction_id else content_ids(out)
    out.insert(0, "transaction_id", ids)

    reason = pd.Series(pd.NA, index=out.index, dtype="string")

    def flag(mask: pd.Series, why: str) -> None:
        reason[mask.fillna(False).astype(bool) & reason.isna()] = why

    flag(encoding, "invalid_encoding")
    flag(out["transaction_id"].isna(), "missing_transaction_id")
    flag(out["transaction_id"].str.len() > MAX_ID_LENGTH, "transaction_id_too_long")
    flag(out["customer_id"].isna(), "missing_customer_id")
    flag(out["customer_id"].str.len() > MAX_ID_LENGTH, "customer_id_too_long")
    flag(source[columns.timestamp].isna(), "missing_timestamp")
    flag(out["ts"].isna(), "unparsable_timestamp")
    flag(out["ts"] > now, "future_timestamp")
    flag(amount_missing, "missing_amount")
    flag(amount_unparsable, "unparsable_amount")
    flag(~np.isfinite(out["amount"].fillna(np.inf)), "non_finite_amount")
    flag(out["amount"] > columns.max_amount, "amount_too_large")
    flag((out["amount"] == 0) & (not columns.accept_zero_amount), "zero_amount")
    flag(out["amount"] < 0, "negative_amount")
    # Only rows that are otherwise valid compete for an id; the first one read wins.
    valid = out[reason.isna()]
    if columns.duplicates == "same_id":
        repeated = valid["transaction_id"].duplicated(keep="first")
    else:
        repeated = valid.duplicated(["transaction_id", "customer_id", "ts", "amount"], keep="first")
        lines = _line_numbers(valid[~repeated])
        later = lines.index[lines > 0]
        out.loc[later, "transaction_id"] = out.loc[later, "transaction_id"] + "#" + lines[later].astype(str)
    flag(repeated.reindex(out.index, fill_value=False), "duplicate_transaction_id")

    keep = pd.Series(True, index=out.index)
    beyond = pd.Series(False, index=out.index)
    if day_range is not None:
        first, end = (d.isoformat() for d in day_range)
        keep = (out["day"].isna() | ((out["day"] >= first) & (out["day"] < end))).astype(bool)
        beyond = ~keep & (reason == "future_timestamp").fillna(False).astype(bool)
    bad = reason.notna()
    return StandardizedBatch(
        accepted=out[keep & ~bad].reset_index(drop=True)[TRANSACTION_COLUMNS],
        quarantined=_quarantine(out[keep & bad], reason, frame),
        rows_read=int(keep.sum()),
        beyond_range=_quarantine(out[beyond], reason, frame),
    )


def _decoded(frame: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """The mapped source columns, text as Arrow strings, and the rows that held bytes that were not UTF-8."""
    columns, bad = {}, pd.Series(False, index=frame.index)
    for name in names:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            columns[name] = values
        else:
            columns[name], undecodable = as_text(values)
            bad |= undecodable
    return pd.DataFrame(columns, index=frame.index), bad


def _quarantine(rows: pd.DataFrame, reason: pd.Series, frame: pd.DataFrame) -> pd.DataFrame:
    """Quarantined rows with their reason and their source row as read."""
    rows = rows.copy()
    rows["reason"] = reason[rows.index]
    rows["source_row"] = pd.Series(source_rows_json(frame.loc[rows.index]), index=rows.index, dtype="string")
    return rows.reset_index(drop=True)


def _require_columns(frame: pd.DataFrame, columns: TransactionColumns) -> None:
    settings = [("transaction_id", c) for c in columns.transaction_id]
    settings += [("customer_id", columns.customer_id), ("timestamp", columns.timestamp)]
    settings += [("country", columns.country)] if columns.country else []
    missing = [f"{name!r} (source.columns.{setting})" for setting, name in settings if name not in frame]
    if missing:
        raise KeyError(f"the source has no column {', '.join(missing)}; it has {list(frame.columns)}")


def _mapped_source_columns(frame: pd.DataFrame, columns: TransactionColumns) -> list[str]:
    """Every source column whose values reach the standard schema."""
    amount = [columns.amount] if columns.amount in frame else _referenced_columns(columns.amount, frame.columns)
    names = [*columns.transaction_id, columns.customer_id, columns.timestamp, *amount]
    return list(dict.fromkeys(names + ([columns.country] if columns.country else [])))


def standardize_customers(frame: pd.DataFrame, columns: CustomerColumns, timezone: str) -> pd.DataFrame:
    """Customer attributes in the standard schema, one row per customer (the last one read wins)."""
    out = pd.DataFrame({"customer_id": normalize_ids(frame[columns.customer_id])})
    for name in ("country", "segment"):
        source = getattr(columns, name)
        out[name] = frame[source].astype("string") if source else pd.Series(pd.NA, index=frame.index, dtype="string")
    out["signup_date"] = (
        parse_timestamps(frame[columns.signup_date], timezone, column=columns.signup_date)
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
