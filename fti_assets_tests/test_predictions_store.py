"""The predictions table on SQLite: the tuple fast path stores exactly what SQLAlchemy Core stores."""

import sqlite3

import numpy as np
import pandas as pd
import pytest

from fti_assets.resources import predictions
from fti_assets.resources.predictions import PREDICTION_COLUMNS, PredictionStoreResource


def scored(days: list[str], per_day: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = len(days) * per_day
    scores = rng.random(rows)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i % per_day:04d}" for i in range(rows)],
            "as_of_day": np.repeat(days, per_day),
            "event_timestamp": pd.to_datetime(np.repeat([f"{d} 22:59:59.250" for d in days], per_day), utc=True),
            "score": scores.round(6),
            "predicted_label": (scores >= 0.5).astype(int),
            "model_version": "3",
            "feature_service": "customer_churn_v1",
            "run_id": "run-1",
        }
    )


def stored(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM churn_predictions ORDER BY as_of_day, customer_id").fetchall()


@pytest.mark.parametrize("batch", [None, 7])
def test_sqlite_fast_path_stores_what_core_stores_and_replaces_days(tmp_path, monkeypatch, batch):
    if batch:  # many batches, the last one short
        monkeypatch.setattr(predictions, "SQLITE_INSERT_BATCH", batch)
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    frame = scored(days)
    fast = PredictionStoreResource(url=f"sqlite:///{tmp_path / 'fast.db'}")
    assert fast.replace_days(frame, days) == len(frame)

    core = PredictionStoreResource(url=f"sqlite:///{tmp_path / 'core.db'}")
    table = core._table()
    with core.engine().begin() as conn:
        conn.execute(table.insert(), frame[PREDICTION_COLUMNS].to_dict(orient="records"))
    assert stored(tmp_path / "fast.db") == stored(tmp_path / "core.db")
    assert stored(tmp_path / "fast.db")[0][2] == "2026-03-01 22:59:59.250000"

    # A day scored again replaces its rows; the other days stay.
    again = scored(["2026-03-02"], per_day=20).assign(model_version="4")
    fast.replace_days(again, ["2026-03-02"])
    back = fast.read_days(days, ["as_of_day", "model_version"])
    assert back.groupby("as_of_day").size().to_dict() == {"2026-03-01": 50, "2026-03-02": 20, "2026-03-03": 50}
    assert set(back.loc[back["as_of_day"] == "2026-03-02", "model_version"]) == {"4"}
