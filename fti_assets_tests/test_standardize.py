"""Ingestion standardization: mapping, typing, and quarantine with a reason for every bad row."""

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from fti_assets.ingestion.standardize import (
    customers_from_transactions,
    normalize_ids,
    parse_timestamps,
    standardize_transactions,
)
from fti_assets.settings import TransactionColumns

COLUMNS = TransactionColumns(transaction_id="txn", customer_id="cust", timestamp="at", amount="total")
NOW = pd.Timestamp("2026-06-01", tz="UTC")


def frame(rows):
    return pd.DataFrame(rows, columns=["txn", "cust", "at", "total"])


def test_every_kind_of_bad_row_is_quarantined_with_its_reason():
    batch = standardize_transactions(
        frame(
            [
                ["t1", 1, "2026-01-01 10:00:00", 10.0],
                [None, 1, "2026-01-01 10:00:00", 10.0],
                ["t2", None, "2026-01-01 10:00:00", 10.0],
                ["t3", 1, "not a time", 10.0],
                ["t4", 1, "2099-01-01 10:00:00", 10.0],
                ["t5", 1, "2026-01-01 11:00:00", np.inf],
                ["t6", 1, "2026-01-01 11:00:00", np.nan],
                ["t7", 1, "2026-01-01 11:00:00", -3.0],
                ["t1", 2, "2026-01-01 12:00:00", 5.0],
            ]
        ),
        COLUMNS,
        "UTC",
        NOW,
    )
    assert batch.accepted["transaction_id"].tolist() == ["t1"]
    assert sorted(batch.quarantined["reason"]) == sorted(
        [
            "missing_transaction_id",
            "missing_customer_id",
            "unparsable_timestamp",
            "future_timestamp",
            "non_finite_amount",
            "missing_amount",
            "negative_amount",
            "duplicate_transaction_id",
        ]
    )
    assert len(batch.accepted) + len(batch.quarantined) == batch.rows_read == 9
    assert batch.reason_counts["non_finite_amount"] == 1


def test_quarantined_rows_keep_the_source_row_as_strict_json():
    batch = standardize_transactions(
        frame([["t9", None, "2026-01-01 10:00:00", 4.5], ["t8", 1, "2026-01-01 10:00:00", np.inf]]), COLUMNS, "UTC", NOW
    )
    rows = [json.loads(row, parse_constant=pytest.fail) for row in batch.quarantined["source_row"]]
    assert rows == [
        {"txn": "t9", "cust": None, "at": "2026-01-01 10:00:00", "total": 4.5},
        {"txn": "t8", "cust": 1, "at": "2026-01-01 10:00:00", "total": "inf"},
    ]


def test_the_first_valid_row_wins_an_id_even_after_a_bad_one():
    batch = standardize_transactions(
        frame([["t1", 1, "2026-01-01 10:00:00", np.nan], ["t1", 1, "2026-01-01 10:05:00", 7.0]]),
        COLUMNS,
        "UTC",
        NOW,
    )
    assert batch.accepted["amount"].tolist() == [7.0]
    assert batch.quarantined["reason"].tolist() == ["missing_amount"]


def test_naive_times_are_local_to_the_source_time_zone_and_days_are_local_days():
    batch = standardize_transactions(
        frame([["a", 1, "2026-07-01 00:30:00", 1.0]]), COLUMNS, "Europe/London", NOW + pd.Timedelta(days=60)
    )
    row = batch.accepted.iloc[0]
    assert row["ts"] == pd.Timestamp("2026-06-30 23:30:00", tz="UTC")
    assert row["day"] == "2026-07-01"
    assert str(batch.accepted["ts"].dtype) == "datetime64[us, UTC]"


def test_day_range_keeps_rows_of_other_days_out_of_the_accounting_but_keeps_unplaceable_rows():
    batch = standardize_transactions(
        frame(
            [
                ["a", 1, "2026-01-01 10:00:00", 1.0],
                ["b", 1, "2026-01-02 10:00:00", 1.0],
                ["c", 1, "garbage", 1.0],
            ]
        ),
        COLUMNS,
        "UTC",
        NOW,
        day_range=(date(2026, 1, 2), date(2026, 1, 3)),
    )
    assert batch.accepted["transaction_id"].tolist() == ["b"]
    assert batch.quarantined["reason"].tolist() == ["unparsable_timestamp"]
    assert batch.quarantined["day"].isna().all()
    assert batch.rows_read == 2


def test_composite_ids_and_amount_expressions_map_a_line_item_source():
    columns = TransactionColumns(
        transaction_id=["Invoice", "StockCode"],
        customer_id="Customer ID",
        timestamp="InvoiceDate",
        amount="Quantity * Unit Price",
        country="Country",
    )
    source = pd.DataFrame(
        {
            "Invoice": ["500", "500", "501"],
            "StockCode": ["A", "B", "A"],
            "Customer ID": ["17850.0", "17850.0", "12484.0"],
            "InvoiceDate": ["2010-04-19 07:14:00"] * 3,
            "Quantity": ["6", "2", "x"],
            "Unit Price": ["7.65", "1.5", "2"],
            "Country": ["United Kingdom", "United Kingdom", "Spain"],
        }
    )
    batch = standardize_transactions(source, columns, "Europe/London", NOW)
    assert batch.accepted["transaction_id"].tolist() == ["500:A", "500:B"]
    assert batch.accepted["customer_id"].tolist() == ["17850", "17850"]
    assert batch.accepted["amount"].tolist() == pytest.approx([45.9, 3.0])
    assert batch.quarantined["reason"].tolist() == ["unparsable_amount"]


def test_a_missing_source_column_names_the_column():
    with pytest.raises(KeyError, match="cust"):
        standardize_transactions(frame([]).drop(columns=["cust"]), COLUMNS, "UTC", NOW)


def test_normalize_ids_turns_float_formatted_ints_into_ints_and_blanks_into_missing():
    ids = normalize_ids(pd.Series(["17850.0", " 42 ", "", None, "A-1", 7]))
    assert ids.tolist()[:2] == ["17850", "42"]
    assert ids.isna().tolist() == [False, False, True, True, False, False]
    assert ids.iloc[5] == "7"


def test_customers_are_derived_from_transactions_when_the_source_has_none():
    transactions = pd.DataFrame(
        {
            "customer_id": ["1", "1", "1", "2"],
            "ts": pd.to_datetime(["2026-01-03", "2026-01-01", "2026-01-02", "2026-02-01"], utc=True),
            "country": ["France", "Spain", "France", None],
        }
    )
    customers = customers_from_transactions(transactions).set_index("customer_id")
    assert customers.loc["1", "signup_date"] == pd.Timestamp("2026-01-01", tz="UTC")
    assert customers.loc["1", "country"] == "France"
    assert pd.isna(customers.loc["2", "country"])


def test_a_source_without_ids_gets_content_ids_that_keep_identical_rows_apart_and_are_stable():
    columns = TransactionColumns(transaction_id=[], customer_id="cust", timestamp="at", amount="total")
    rows = frame(
        [
            [None, 1, "2026-01-01 10:00:00", 5.0],
            [None, 1, "2026-01-01 10:00:00", 5.0],  # the same purchase made twice: two purchases
            [None, 2, "2026-01-01 11:00:00", 7.0],
        ]
    )
    batch = standardize_transactions(rows, columns, "UTC", NOW)
    assert batch.quarantined.empty and batch.accepted["transaction_id"].is_unique
    assert batch.accepted["transaction_id"].str.len().max() <= 64
    again = standardize_transactions(rows.iloc[::-1], columns, "UTC", NOW)  # another read order
    key = ["transaction_id", "customer_id", "amount"]
    assert sorted(map(tuple, again.accepted[key].values)) == sorted(map(tuple, batch.accepted[key].values))


def test_a_line_item_log_keeps_repeated_lines_of_an_invoice_and_quarantines_exact_repeats():
    columns = TransactionColumns(
        transaction_id=["inv", "item"], duplicates="same_id_and_content", customer_id="cust", timestamp="at", amount="q"
    )
    rows = pd.DataFrame(
        {
            "inv": ["500"] * 4,
            "item": ["A", "A", "A", "B"],
            "cust": ["1"] * 4,
            "at": ["2026-01-01 10:00:00"] * 4,
            "q": ["6", "2", "6", "6"],  # line 3 repeats line 1 exactly: a row delivered twice
        }
    )
    batch = standardize_transactions(rows, columns, "UTC", NOW)
    lines = dict(zip(batch.accepted["transaction_id"], batch.accepted["amount"], strict=True))
    assert lines == {"500:A": 2.0, "500:A#1": 6.0, "500:B": 6.0}  # numbered by amount: any read order agrees
    assert batch.quarantined["reason"].tolist() == ["duplicate_transaction_id"]
    reread = standardize_transactions(rows.iloc[::-1], columns, "UTC", NOW)
    assert dict(zip(reread.accepted["transaction_id"], reread.accepted["amount"], strict=True)) == lines


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("dayfirst", ["1997-01-02 10:00", "1997-01-13 00:00", "1997-01-02 00:00"]),
        ("monthfirst", ["1997-02-01 10:00", None, "1997-01-02 00:00"]),
        ("%d/%m/%Y %H:%M", ["1997-01-02 10:00", None, None]),
    ],
)
def test_numeric_dates_read_in_the_configured_order(form, expected):
    values = pd.Series(["02/01/1997 10:00", "13/01/1997", "1997-01-02"])
    parsed = parse_timestamps(values, "UTC", form)
    assert [None if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M") for t in parsed] == expected


def test_numeric_dates_without_a_format_are_an_error_naming_the_setting_not_a_guess():
    with pytest.raises(ValueError, match="'InvoiceDate' has 2 numeric dates such as '02/01/1997'.*timestamp_format"):
        parse_timestamps(pd.Series(["2026-01-01 10:00", "02/01/1997", "13/01/1997"]), "UTC", column="InvoiceDate")


def test_settings_that_cannot_be_applied_fail_at_load():
    with pytest.raises(ValueError, match="duplicates must be one of"):
        TransactionColumns(transaction_id="t", customer_id="c", timestamp="at", amount="x", duplicates="first")
    with pytest.raises(ValueError, match="timestamp_format must be one of"):
        TransactionColumns(transaction_id="t", customer_id="c", timestamp="at", amount="x", timestamp_format="dd/mm")


def test_a_quarantined_row_reads_the_same_whether_or_not_its_batch_has_nulls():
    """An integer column read with a null in the batch is float there: 365 must not become 365.0."""
    from fti_assets.ingestion.standardize import source_rows_json

    with_gap = pd.DataFrame({"cust_id": [365.0, np.nan], "total": [22.5, np.inf]})
    without = pd.DataFrame({"cust_id": [365], "total": [22.5]})
    assert source_rows_json(with_gap)[0] == source_rows_json(without)[0] == '{"cust_id":365,"total":22.5}'
    assert source_rows_json(with_gap)[1] == '{"cust_id":null,"total":"inf"}'
