"""The lake: parquet files per asset and day partition, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field

from fti_assets.partitions import DaySlices
from fti_assets.recovery import temp_prefix

FILE_THREADS = 4
T, R = TypeVar("T"), TypeVar("R")


def write_parquet_atomic(data: pd.DataFrame | pa.Table, path: Path) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    os.close(fd)
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    # Dictionary pages for all but floating-point columns: a float column (a spend, a mean) has nearly as
    # many values as rows, so its dictionary is built and then thrown away; without it a file is written
    # 40% faster, and is no larger.
    dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    try:
        pq.write_table(table, tmp, use_dictionary=dictionary)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def in_threads(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``function`` of each item, a few at a time: a day file's parquet work releases the GIL, so a range's
    hundreds of small files use every core."""
    with ThreadPoolExecutor(max_workers=FILE_THREADS) as pool:
        return list(pool.map(function, items))


def days(first: date, end: date) -> list[date]:
    """The days in [first, end)."""
    return [first + timedelta(days=i) for i in range((end - first).days)]


class LakeResource(ConfigurableResource):
    """Local (or mounted object-store) folder holding one parquet file per asset and day."""

    root: str = Field(description="Folder of the lake; one sub-folder per asset.")

    def day_path(self, asset: str, day: date) -> Path:
        return Path(self.root, asset, f"{day.isoformat()}.parquet")

    def table_path(self, name: str) -> Path:
        return Path(self.root, f"{name}.parquet")

    def write_days(self, asset: str, slices: DaySlices, day_keys: list[str]) -> None:
        """Each day's rows (none: an empty file with the schema) to the day's file. The frame becomes Arrow
        once and each day is a slice of it: the rows ``DataFrame.to_parquet`` of the day would hold, at half the
        cost."""
        table = pa.Table.from_pandas(slices.frame, preserve_index=False)

        def write(key: str) -> Path:
            start, end = slices.bounds.get(key, (0, 0))
            return write_parquet_atomic(table.slice(start, end - start), self.day_path(asset, date.fromisoformat(key)))

        in_threads(write, day_keys)

    def read_days(self, asset: str, first: date, end: date, columns: list[str] | None = None) -> pd.DataFrame:
        """Rows of the days in [first, end) that have been written; days never written are absent.

        The files are read as Arrow and joined before one conversion to pandas (a day file without rows may
        have a column of type null, from older writes: it takes the other days' type)."""
        paths = [p for p in (self.day_path(asset, d) for d in days(first, end)) if p.exists()]
        if not paths:
            return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
        tables = in_threads(lambda path: pq.read_table(path, columns=columns, use_threads=False), paths)
        return pa.concat_tables(tables, promote_options="default").to_pandas()

    def row_counts(self, asset: str, days_wanted: list[date]) -> dict[str, int]:
        """Rows of each written day among ``days_wanted`` (from the files' footers), by ISO day; days never
        written are absent."""
        paths = {d.isoformat(): self.day_path(asset, d) for d in days_wanted}
        return {day: pq.ParquetFile(path).metadata.num_rows for day, path in paths.items() if path.exists()}

    def written_days(self, asset: str) -> list[date]:
        folder = Path(self.root, asset)
        if not folder.exists():
            return []
        return sorted(date.fromisoformat(p.stem) for p in folder.glob("*.parquet"))
