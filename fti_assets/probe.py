"""The check a model's scores on probe rows must pass before the model may serve.

Dependency-free on purpose: the online service runs it before a version goes live, and the training
pipeline's promotion step can run the same check before it moves the alias.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def probe_failure(scores: Iterable[float], rows: int) -> str | None:
    """Why ``scores`` (the model's output for ``rows`` probe rows) cannot be served, or None when they can:
    one score per row, each a finite probability in [0, 1]."""
    values = [float(s) for s in scores]
    if len(values) != rows:
        return f"returned {len(values)} scores for {rows} probe rows"
    not_finite = [v for v in values if not math.isfinite(v)]
    if not_finite:
        return f"{len(not_finite)} of {rows} probe scores are not finite (first: {not_finite[0]})"
    outside = [v for v in values if not 0.0 <= v <= 1.0]
    if outside:
        return f"{len(outside)} of {rows} probe scores are outside [0, 1] (first: {outside[0]!r})"
    return None
