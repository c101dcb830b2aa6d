"""Content hashes: data versions, dataset ids and definition versions come from what the data is."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row, from the row's values alone (a row hashes the same in any frame)."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy() if len(frame) else np.array([], "uint64")


def digest_version(frame: pd.DataFrame, hashes: np.ndarray) -> str:
    """The version of ``frame``'s schema with the rows whose hashes are given, in that order."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    if len(hashes):
        digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


def frame_version(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's columns, dtypes and values (row order matters: sort first)."""
    return digest_version(frame, row_hashes(frame))


def text_version(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]
