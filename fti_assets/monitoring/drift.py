"""Feature drift with a pinned Evidently stat test: per-column verdicts as DataDriftPreset gives them, fast.

``evaluate_drift`` calls the very StatTest object the preset resolves for each column
(``evidently.legacy.calculations.stattests.get_stattest``, as ``get_one_column_drift`` does) on the
cleaned column values, without the preset's correlations, histograms, plots and double computation.
``write_drift_report`` renders the real preset for a human, on a seeded sample.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fti_assets.recovery import temp_prefix

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

# Stat tests whose value depends on the samples only through their sorted values (scipy sorts them
# again inside); feeding them pre-sorted columns makes scipy's sorts nearly free.
_ORDER_FREE_METHODS = frozenset({"wasserstein", "ks"})
# The normed Wasserstein divides by the reference std, whose float sum depends on row order by up to a
# few ULPs; a score this close to the threshold is recomputed in the preset's row order.
_EXACT_RECHECK_BAND = 1e-9


class NoRowsToCompare(ValueError):
    """One side of a drift evaluation has no rows (a day without feature rows): there is no verdict to give,
    so callers report the day as not compared instead of failing."""


@dataclass(frozen=True)
class DriftSettings:
    """The pinned drift method and thresholds (names and semantics as Evidently's stat tests)."""

    method: str = "wasserstein"
    column_threshold: float = 0.1
    drifted_share_threshold: float = 0.3
    report_sample_rows: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.method:
            raise ValueError("DriftSettings.method must name an Evidently stat test, e.g. 'wasserstein'")
        if not math.isfinite(self.column_threshold) or self.column_threshold < 0:
            raise ValueError(f"DriftSettings.column_threshold must be finite and >= 0, got {self.column_threshold}")
        if not 0 < self.drifted_share_threshold <= 1:
            raise ValueError(
                f"DriftSettings.drifted_share_threshold must be in (0, 1], got {self.drifted_share_threshold}"
            )
        if self.report_sample_rows < 1:
            raise ValueError(f"DriftSettings.report_sample_rows must be >= 1, got {self.report_sample_rows}")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift score and verdict under its stat test."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts and the dataset verdict (drifted share >= threshold, Evidently's rule)."""

    columns: list[ColumnDrift]
    drifted_share: float
    drifted: bool
    reference_rows: int
    current_rows: int

    def as_metadata(self) -> dict[str, Any]:
        """JSON-able summary for asset-check metadata."""
        return {
            "drifted": self.drifted,
            "drifted_share": self.drifted_share,
            "drifted_columns": [c.column for c in self.columns if c.drifted],
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": {
                c.column: {
                    "score": c.score,
                    "method": c.method,
                    "threshold": c.threshold,
                    "verdict": "drift" if c.drifted else "ok",
                }
                for c in self.columns
            },
        }

    def summary(self) -> str:
        """One line: the dataset verdict, then the drifted columns with their scores."""
        drifted = [c for c in self.columns if c.drifted]
        head = (
            f"{'DRIFT' if self.drifted else 'no drift'}: {len(drifted)}/{len(self.columns)} columns drifted "
            f"(share {self.drifted_share:.2f}); "
            f"reference {self.reference_rows:,} rows, current {self.current_rows:,} rows"
        )
        if not drifted:
            return head
        details = ", ".join(f"{c.column} ({c.method} {c.score:.4g}, threshold {c.threshold:g})" for c in drifted)
        return f"{head}: {details}"


class SortedReference:
    """A reference frame whose columns are sorted once, on first use.

    Judging many days against one reference (the drift gate, 30 days after a training period) then sorts
    the reference once per column instead of once per column and day; at 80,000 customers the reference
    holds 1.9M rows."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._sorted: dict[str, np.ndarray] = {}
        self._distributions: dict[str, Distribution] = {}

    def sorted_values(self, column: str) -> np.ndarray:
        if column not in self._sorted:
            self._sorted[column] = self._sort(column)
        return self._sorted[column]

    def distribution(self, column: str) -> Distribution:
        # Not kept sorted as well: the distinct values are what each comparison reads (at 80,000 customers the
        # sorted columns held 410 MB through the whole inference run).
        if column not in self._distributions:
            values = self._sorted[column] if column in self._sorted else self._sort(column)
            self._distributions[column] = Distribution.of_sorted(values)
        return self._distributions[column]

    def _sort(self, column: str) -> np.ndarray:
        return np.sort(_finite_values(self.frame, column, "reference").to_numpy())


@dataclass(frozen=True)
class Distribution:
    """A sorted sample as its distinct values, how often each occurs, and its standard deviation.

    Feature columns repeat values (counts, days, a customer's totals between purchases): at 80,000 customers
    a reference column's 1.9M values are often a few thousand distinct ones, and each day's comparison costs
    those, not the 1.9M."""

    values: np.ndarray
    counts: np.ndarray
    std: float

    @classmethod
    def of_sorted(cls, sorted_values: np.ndarray) -> Distribution:
        first_of_value = np.ones(len(sorted_values), dtype=bool)
        first_of_value[1:] = sorted_values[1:] != sorted_values[:-1]
        starts = np.flatnonzero(first_of_value)
        counts = np.diff(np.r_[starts, len(sorted_values)])
        return cls(sorted_values[starts], counts, float(np.std(sorted_values)))

    def wasserstein(self, current: np.ndarray) -> float:
        """scipy's ``wasserstein_distance`` of this sample and the sorted sample ``current``, by merging them
        (O(distinct + m)) instead of sorting their union: the integral of |F_ref - F_cur| over the merged
        values. A value of ``current`` goes after an equal reference value, so the gap between them is zero."""
        at = np.searchsorted(self.values, current, side="right")
        # In float: inserted into an int64 count column, a day's fractional values would be truncated.
        merged = np.insert(self.values.astype("float64", copy=False), at, current)
        reference_counts = np.insert(self.counts, at, 0)
        cdf_reference = np.cumsum(reference_counts)[:-1] / self.counts.sum()
        cdf_current = np.cumsum(reference_counts == 0)[:-1] / len(current)
        return float(np.sum(np.abs(cdf_reference - cdf_current) * np.diff(merged)))


def evaluate_drift(
    reference: pd.DataFrame | SortedReference, current: pd.DataFrame, columns: list[str], settings: DriftSettings
) -> DriftResult:
    """Score every column with Evidently's stat test for ``settings.method``; all columns are numerical.

    The normed Wasserstein distance (the default) is Evidently's formula, distance / max(std of the
    reference, 0.001), with the distance computed by ``Distribution.wasserstein``; a score within rounding of
    the threshold is recomputed by Evidently itself, in the rows' own order."""
    prepared = reference if isinstance(reference, SortedReference) else SortedReference(reference)
    _check_inputs(prepared.frame, current, columns)
    # Columns are independent and their sorts release the GIL: one thread per core (half the time on 2 cores).
    with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda column: _column_drift(prepared, current, column, settings), columns))
    return _result(results, settings, len(prepared.frame), len(current))


def _column_drift(
    prepared: SortedReference, current: pd.DataFrame, column: str, settings: DriftSettings
) -> ColumnDrift:
    """One column's score and verdict (see evaluate_drift)."""
    order_free = settings.method in _ORDER_FREE_METHODS
    cur = _finite_values(current, column, "current")
    if settings.method == "wasserstein":
        reference_distribution = prepared.distribution(column)
        score = reference_distribution.wasserstein(np.sort(cur.to_numpy())) / max(reference_distribution.std, 0.001)
        threshold, drifted = settings.column_threshold, score >= settings.column_threshold
    else:
        ref_sorted = prepared.sorted_values(column)
        ref_series = pd.Series(ref_sorted) if order_free else _finite_values(prepared.frame, column, "reference")
        cur_series = pd.Series(np.sort(cur.to_numpy())) if order_free else cur
        score, threshold, drifted = _evidently_stat_test(ref_series, cur_series, settings)
    if order_free and _near_threshold(score, threshold):
        ref = _finite_values(prepared.frame, column, "reference")
        score, threshold, drifted = _evidently_stat_test(ref, cur, settings)
    return ColumnDrift(
        column=column, method=settings.method, score=float(score), threshold=float(threshold), drifted=bool(drifted)
    )


def _evidently_stat_test(reference: pd.Series, current: pd.Series, settings: DriftSettings) -> tuple:
    """(score, threshold, drifted) of the StatTest the preset resolves for ``settings.method``. Evidently is
    imported here, when first needed: its import alone takes seconds, which the default Wasserstein path
    away from its threshold never pays."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    stat_test = get_stattest(reference, current, ColumnType.Numerical, settings.method)
    outcome = stat_test(reference, current, ColumnType.Numerical, settings.column_threshold)
    return outcome.drift_score, outcome.actual_threshold, outcome.drifted


def evaluate_drift_with_preset(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], settings: DriftSettings
) -> DriftResult:
    """The same evaluation through Evidently's full DataDriftPreset (slow: the baseline to compare with)."""
    _check_inputs(reference, current, columns)
    snapshot = _preset_snapshot(reference[columns], current[columns], columns, settings)
    content = snapshot.dict()
    column_of: dict[str, str] = {}
    scores: dict[str, float] = {}
    share_metric_id: str | None = None
    share = math.nan
    for metric in content["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            column_of[metric["id"]] = config["column"]
            scores[config["column"]] = float(metric["value"])
        elif config["type"].endswith(":DriftedColumnsCount"):
            share_metric_id = metric["id"]
            share = float(metric["value"]["share"])
    verdicts: dict[str, bool] = {}
    dataset_drifted = False
    for test in content["tests"]:
        metric_id = test["metric_config"]["metric_id"]
        if metric_id in column_of:
            verdicts[column_of[metric_id]] = test["status"] == "FAIL"
        elif metric_id == share_metric_id:
            dataset_drifted = test["status"] == "FAIL"
    return DriftResult(
        columns=[
            ColumnDrift(
                column=column,
                method=settings.method,
                score=scores[column],
                threshold=settings.column_threshold,
                drifted=verdicts[column],
            )
            for column in columns
        ],
        drifted_share=share,
        drifted=dataset_drifted,
        reference_rows=len(reference),
        current_rows=len(current),
    )


def write_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    settings: DriftSettings,
    path: Path,
    title: str,
) -> Path:
    """Evidently's DataDriftPreset HTML on seeded samples of each side, written atomically to ``path``."""
    _check_inputs(reference, current, columns)
    ref_sample = _sample(reference[columns], settings)
    cur_sample = _sample(current[columns], settings)
    snapshot = _preset_snapshot(ref_sample, cur_sample, columns, settings)
    note = (
        f"{title}: Evidently DataDriftPreset on a random sample (seed {settings.seed}) of "
        f"{len(ref_sample):,} of {len(reference):,} reference rows and {len(cur_sample):,} of {len(current):,} "
        f"current rows; method {settings.method}, column threshold {settings.column_threshold:g}, "
        f"drifted-share threshold {settings.drifted_share_threshold:g}. The check's verdicts are computed on "
        f"all rows; this sample's verdicts can differ for scores near the threshold."
    )
    page = snapshot.get_html_str(as_iframe=False)
    if "<head>" not in page or "<body>" not in page:
        raise RuntimeError("Evidently's HTML template changed: no <head>/<body> to put the sample note in")
    page = page.replace("<head>", f"<head>\n<title>{html.escape(title)}</title>", 1)
    page = page.replace(
        "<body>",
        f'<body>\n<p id="drift-report-note" style="font-family:sans-serif;margin:12px">{html.escape(note)}</p>',
        1,
    )
    return _write_atomically(path, page)


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    if not columns:
        raise ValueError("no columns given for drift evaluation")
    if len(set(columns)) != len(columns):
        raise ValueError(f"duplicate columns given for drift evaluation: {columns}")
    for side, frame in (("reference", reference), ("current", current)):
        if len(frame) == 0:
            raise NoRowsToCompare(f"the {side} data has no rows: nothing to compare")
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the {side} data lacks columns {missing}")
        for column in columns:
            dtype = frame[column].dtype
            if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
                raise ValueError(f"column {column!r} in the {side} data is {dtype}, not numeric")


def _finite_values(frame: pd.DataFrame, column: str, side: str) -> pd.Series:
    """The column's values without NaN and +-inf, in row order (Evidently drops both before testing)."""
    series = frame[column]
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = series.to_numpy()
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(f"column {column!r} has no finite values in the {side} data")
    return pd.Series(values)


def _near_threshold(score: float, threshold: float) -> bool:
    return abs(score - threshold) <= _EXACT_RECHECK_BAND * max(abs(threshold), 1e-12)


def _result(columns: list[ColumnDrift], settings: DriftSettings, reference_rows: int, current_rows: int) -> DriftResult:
    share = sum(c.drifted for c in columns) / len(columns)
    return DriftResult(
        columns=columns,
        drifted_share=share,
        # Evidently's rule: get_dataset_drift uses share >= drift_share, and the preset's test
        # "Share of Drifted Columns: Less <drift_share>" fails from share == drift_share on.
        drifted=share >= settings.drifted_share_threshold,
        reference_rows=reference_rows,
        current_rows=current_rows,
    )


def _preset_snapshot(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], settings: DriftSettings
) -> Snapshot:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # The preset's dataset-level pass keeps +-inf in a column without NaN (it cleans only where isna()
    # finds something) while its per-column pass drops them; as NaN both passes drop them.
    reference = reference.replace([np.inf, -np.inf], np.nan)
    current = current.replace([np.inf, -np.inf], np.nan)

    # Declared numerical: inference would make an int column with <= 10 distinct values categorical,
    # where wasserstein and ks are not allowed and the preset raises.
    definition = DataDefinition(numerical_columns=list(columns))
    preset = DataDriftPreset(
        columns=list(columns),
        method=settings.method,
        threshold=settings.column_threshold,
        drift_share=settings.drifted_share_threshold,
    )
    return Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def _sample(frame: pd.DataFrame, settings: DriftSettings) -> pd.DataFrame:
    if len(frame) <= settings.report_sample_rows:
        return frame
    rows = np.random.default_rng(settings.seed).choice(len(frame), size=settings.report_sample_rows, replace=False)
    # Kept in row order, so the preset's index-binned plot still reads as time.
    return frame.iloc[np.sort(rows)]


def _write_atomically(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # mkstemp makes the file owner-only; a report is meant to be read by the UI and others.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
