"""Content hashes: data versions, dataset ids and definition versions come from what the data is."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd


def frame_version(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's columns, dtypes and values (row order matters: sort first)."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    if len(frame):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def text_version(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]
