"""Time-based split of a point-in-time training dataset, its sampling, and its versioned file."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fti_assets.recovery import temp_prefix
from fti_assets.versioning import StreamingVersion


@dataclass(frozen=True)
class SplitPeriods:
    train: tuple[str, str]
    validation: tuple[str, str]
    test: tuple[str, str]
    # The as-of days between train and validation whose label windows reach the validation days: in no split.
    purged: tuple[str, str] | None = None

    def as_metadata(self) -> dict[str, str]:
        return {name: f"{period[0]} .. {period[1]}" for name, period in self.__dict__.items() if period}


def split_by_time(days: list[str], validation_days: int, test_days: int, horizon_days: int) -> SplitPeriods:
    """The last ``test_days`` days test, the ``validation_days`` before them validation, and train the days
    whose labels are settled before validation begins.

    A label looks ``horizon_days`` past its day: a train day whose window reaches the first validation day
    would carry the very purchases the validation and test days are judged on, and a model could learn them
    (on the Online Retail sample the champion picked that way lost to BG/NBD, and won without those days).
    Those days are purged, as in purged cross-validation: in no split."""
    days = sorted(set(days))
    if len(days) < validation_days + test_days + 1:
        raise ValueError(
            f"{len(days)} labelled days cannot hold {validation_days} validation + {test_days} test days "
            "and a training period: label more days or shorten split.validation_days / split.test_days"
        )
    test, validation = days[-test_days:], days[-(test_days + validation_days) : -test_days]
    earlier = days[: -(test_days + validation_days)]
    last_train = (date.fromisoformat(validation[0]) - timedelta(days=horizon_days + 1)).isoformat()
    train, purged = [d for d in earlier if d <= last_train], [d for d in earlier if d > last_train]
    if not train:
        raise ValueError(
            f"no training day is left: the {len(earlier)} days before validation ({validation[0]}) are within the "
            f"{horizon_days}-day label horizon of it; label more days or shorten split.validation_days / "
            "split.test_days"
        )
    return SplitPeriods(
        (train[0], train[-1]),
        (validation[0], validation[-1]),
        (test[0], test[-1]),
        (purged[0], purged[-1]) if purged else None,
    )


def assign_split(as_of_day: pd.Series, periods: SplitPeriods) -> pd.Series:
    split = pd.Series("train", index=as_of_day.index, dtype="string")
    if periods.purged:
        split[as_of_day >= periods.purged[0]] = "purged"
    split[as_of_day >= periods.validation[0]] = "validation"
    split[as_of_day >= periods.test[0]] = "test"
    return split


def dataset_rows(labels: pd.DataFrame, periods: SplitPeriods, stride_days: int) -> pd.Series:
    """True for the label rows a training dataset holds: every validation and test row, each customer's train
    row every ``stride_days`` days (``stride_sample``), no purged row."""
    split = assign_split(labels["as_of_day"], periods)
    return split.isin(["validation", "test"]) | ((split == "train") & stride_sample(labels, stride_days))


def stride_sample(frame: pd.DataFrame, stride_days: int) -> pd.Series:
    """True for the rows a customer contributes every ``stride_days`` as-of days.

    Each customer's phase comes from a hash of the id, so every day keeps about 1/N of its customers and
    the choice depends on the row alone: the same rows are kept in any run, in any chunk."""
    if stride_days == 1:
        return pd.Series(True, index=frame.index)
    phase = pd.util.hash_array(frame["customer_id"].astype(str).to_numpy()) % np.uint64(stride_days)
    day_number = (pd.to_datetime(frame["as_of_day"]) - pd.Timestamp("1970-01-01")).dt.days.to_numpy()
    return pd.Series((day_number.astype("uint64") + phase) % np.uint64(stride_days) == 0, index=frame.index)


class VersionedParquetWriter:
    """Writes a frame in parts to a hidden file and publishes it as ``<content version>.parquet``.

    The parts are never held together, and a version already published is left as it is."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        fd, name = tempfile.mkstemp(dir=folder, prefix=temp_prefix(folder / "dataset"), suffix=".tmp")
        os.close(fd)
        self._tmp = Path(name)
        self._writer: pq.ParquetWriter | None = None
        self._version = StreamingVersion()
        self.rows = 0

    def write(self, part: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(part, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table)
        self._version.update(part)
        self.rows += len(part)

    def publish(self) -> tuple[str, Path]:
        """Close the file; rename it to its version unless that version exists. (version, path)."""
        if self._writer is None:
            raise ValueError("no rows were written")
        self._writer.close()
        version = self._version.version
        path = self.folder / f"{version}.parquet"
        if path.exists():
            self._tmp.unlink()
        else:
            os.replace(self._tmp, path)
        return version, path

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)
