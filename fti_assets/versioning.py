"""Content hashes: data versions, dataset ids and definition versions come from what the data is."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row, from the row's values alone (a row hashes the same in any frame)."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy() if len(frame) else np.array([], "uint64")


def schema_digest(frame: pd.DataFrame):
    return hashlib.sha256(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())


def digest_version(frame: pd.DataFrame, hashes: np.ndarray, schema=None) -> str:
    """The version of ``frame``'s schema with the rows whose hashes are given, in that order. ``schema``:
    ``schema_digest(frame)`` when the caller versions many parts of one frame."""
    digest = (schema or schema_digest(frame)).copy()
    if len(hashes):
        digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


class StreamingVersion:
    """``frame_version`` of a frame written in parts: the same version as of the parts concatenated."""

    def __init__(self) -> None:
        self._digest = None

    def update(self, part: pd.DataFrame) -> None:
        if self._digest is None:
            self._digest = schema_digest(part)
        if len(part):
            self._digest.update(row_hashes(part).tobytes())

    @property
    def version(self) -> str:
        if self._digest is None:
            raise ValueError("no part was hashed")
        return self._digest.hexdigest()[:16]


def frame_version(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's columns, dtypes and values (row order matters: sort first)."""
    return digest_version(frame, row_hashes(frame))


def text_version(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]
