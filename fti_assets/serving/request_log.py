"""The request log: the contract between the online service (writes it) and monitoring (reads it).

One JSON line per answered id, one file per UTC day (``requests-<day>[.<writer>].jsonl``): the columns
``REQUEST_LOG_COLUMNS`` and a ``features`` object with the model inputs the score used.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

REQUEST_LOG_PREFIX = "requests-"
REQUEST_LOG_COLUMNS = [
    "time",
    "customer_id",
    "known",
    "churn_probability",
    "predicted_label",
    "model_version",
    "feature_service",
    "feature_event_time",
]

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class LineFormat:
    """The lines of one model version, with what is fixed per version built once."""

    def __init__(self, model_version: str, feature_service: str, input_names: Sequence[str]):
        self.input_names = tuple(input_names)
        self._head = f'"model_version":{json.dumps(model_version)},"feature_service":{json.dumps(feature_service)}'
        # repr is json's own float format: one %-format per row instead of encoding a dict.
        self._features = "{" + ",".join(f"{json.dumps(name)}:%r" for name in self.input_names) + "}"

    def lines(self, stamp: str, predictions: list[dict], rows: list[list[float]], has_null: Sequence[bool]) -> str:
        """The log lines of one response: ``predictions`` as answered, ``rows`` the model inputs of each id
        (NaN where the store holds no value), ``has_null`` whether a row holds one."""
        out = []
        for answer, row, null in zip(predictions, rows, has_null, strict=True):
            if null:
                features = _ENCODER.encode(
                    {name: v if math.isfinite(v) else None for name, v in zip(self.input_names, row, strict=True)}
                )
            else:
                features = self._features % tuple(row)
            score, label, event_time = (
                answer["churn_probability"],
                answer["predicted_label"],
                answer["feature_event_time"],
            )
            out.append(
                f'{{"time":"{stamp}","customer_id":{json.dumps(answer["customer_id"])},'
                f'"known":{"true" if answer["known"] else "false"},'
                f'"churn_probability":{"null" if score is None else _float_json(score)},'
                f'"predicted_label":{"null" if label is None else label},{self._head},'
                f'"feature_event_time":{"null" if event_time is None else json.dumps(event_time)},'
                f'"features":{features}}}\n'
            )
        return "".join(out)


def _float_json(value: float) -> str:
    return repr(value) if math.isfinite(value) else "null"


class RequestLog:
    """Append-only JSON lines, one file per UTC day, written and flushed under a lock.

    ``writer`` names the process when several serve (``--workers``): each appends to its own
    ``requests-<day>.<writer>.jsonl``, so lines of two processes never interleave.
    """

    def __init__(self, folder: Path, writer: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self._lock = threading.Lock()
        self._day: str | None = None
        self._file = None

    def path_of(self, day: str) -> Path:
        suffix = f".{self.writer}" if self.writer else ""
        return self.folder / f"{REQUEST_LOG_PREFIX}{day}{suffix}.jsonl"

    def append(self, day: str, text: str) -> None:
        with self._lock:
            if day != self._day or self._file is None:
                if self._file is not None:
                    self._file.close()
                self._file = open(self.path_of(day), "a", encoding="utf-8")  # noqa: SIM115 (kept open)
                self._day = day
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file, self._day = None, None


def read_request_log(request_log_dir: str | os.PathLike, days: list[str] | None = None) -> pd.DataFrame:
    """The request log as a frame: one row per answered id, the metadata columns
    (``REQUEST_LOG_COLUMNS``, ``time`` and ``feature_event_time`` as UTC datetimes) then one column per
    feature. ``days`` (``YYYY-MM-DD``) limits it to those days' files. A torn last line (a crash while
    writing) is skipped."""
    folder = Path(request_log_dir)
    paths = sorted(folder.glob(f"{REQUEST_LOG_PREFIX}*.jsonl")) if folder.is_dir() else []
    if days is not None:
        wanted = {f"{REQUEST_LOG_PREFIX}{day}" for day in days}
        paths = [p for p in paths if p.name.removesuffix(".jsonl").split(".")[0] in wanted]
    records: list[dict] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                features = record.pop("features", None) or {}
                records.append({**record, **features})
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=REQUEST_LOG_COLUMNS)
    frame = frame[REQUEST_LOG_COLUMNS + [c for c in frame.columns if c not in REQUEST_LOG_COLUMNS]]
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    if len(paths) > 1:  # several days or several writers: one timeline
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
    frame["feature_event_time"] = pd.to_datetime(frame["feature_event_time"], utc=True, format="ISO8601")
    frame["predicted_label"] = frame["predicted_label"].astype("Int64")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["model_version"] = frame["model_version"].astype(str)
    return frame
