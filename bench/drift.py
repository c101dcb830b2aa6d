"""Evidently's DataDriftPreset against ``evaluate_drift`` + ``write_drift_report``, on the same data.

    python bench/drift.py [--rows 1000000] [--columns 10] [--method wasserstein]

Synthetic reference and current frames (N rows x C numeric columns, some NaN): every fourth column
shifted by 0.5 std, every fourth (offset 1) scaled by 1.5, the rest unchanged. Times the preset with
the pinned method and thresholds (the baseline), then our evaluation on all rows and the HTML report on
a sample, and prints a table. Exits 1 if any per-column verdict, the dataset verdict or a score (beyond
1e-9 relative: rounding) differs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fti_assets.monitoring.drift import (  # noqa: E402
    DriftSettings,
    evaluate_drift,
    evaluate_drift_with_preset,
    write_drift_report,
)


def synthetic(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames with a mix of distributions; column i % 4 == 0 shifted, == 1 scaled."""
    rng = np.random.default_rng(seed)
    reference: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    for i in range(columns):
        ref: np.ndarray
        cur: np.ndarray
        kind = i % 3
        if kind == 0:
            ref, cur = rng.normal(50.0, 10.0, rows), rng.normal(50.0, 10.0, rows)
        elif kind == 1:
            ref, cur = rng.gamma(2.0, 30.0, rows), rng.gamma(2.0, 30.0, rows)
        else:
            ref, cur = rng.integers(0, 90, rows), rng.integers(0, 90, rows)
        if i % 4 == 0:
            cur = cur + 0.5 * ref.std()
        elif i % 4 == 1:
            cur = cur * 1.5
        if cur.dtype.kind == "f":
            cur[rng.random(rows) < 0.01] = np.nan
        reference[f"f{i:02d}"], current[f"f{i:02d}"] = ref, cur
    return pd.DataFrame(reference), pd.DataFrame(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--method", default="wasserstein")
    parser.add_argument("--threshold", type=float, default=0.1)
    args = parser.parse_args()

    settings = DriftSettings(method=args.method, column_threshold=args.threshold)
    reference, current = synthetic(args.rows, args.columns)
    columns = list(reference.columns)

    start = time.perf_counter()
    import evidently  # noqa: F401  (imported once, outside both timings)

    import_s = time.perf_counter() - start

    start = time.perf_counter()
    baseline = evaluate_drift_with_preset(reference, current, columns, settings)
    preset_s = time.perf_counter() - start

    start = time.perf_counter()
    ours = evaluate_drift(reference, current, columns, settings)
    drift_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_drift_report(reference, current, columns, settings, Path(tmp) / "drift.html", "bench")
        report_s = time.perf_counter() - start

    pairs = list(zip(ours.columns, baseline.columns, strict=True))
    agree = sum(a.drifted == b.drifted for a, b in pairs)
    max_rel = max(abs(a.score - b.score) / max(abs(b.score), 1e-300) for a, b in pairs)
    total_s = drift_s + report_s
    print(
        f"method {settings.method}, column threshold {settings.column_threshold:g}, "
        f"drifted-share threshold {settings.drifted_share_threshold:g}, "
        f"report sample {settings.report_sample_rows:,} rows"
    )
    print(f"import evidently (once, not in the timings): {import_s:.1f} s")
    print()
    print("| rows | columns | preset s | ours drift s | ours report s | ours total s | speed-up | verdicts agree |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.rows:,} | {args.columns} | {preset_s:.1f} | {drift_s:.2f} | {report_s:.2f} | {total_s:.2f} | "
        f"{preset_s / total_s:.1f}x | {agree}/{len(columns)} |"
    )
    print()
    print(f"largest relative score difference: {max_rel:.1e}")
    print(
        f"dataset verdict: ours {ours.drifted} (share {ours.drifted_share:.2f}), "
        f"preset {baseline.drifted} (share {baseline.drifted_share:.2f})"
    )
    for a, b in pairs:
        flag = "" if a.drifted == b.drifted else "  <-- DISAGREE"
        print(
            f"  {a.column}: ours {a.score:.6g} {'drift' if a.drifted else 'ok'}, "
            f"preset {b.score:.6g} {'drift' if b.drifted else 'ok'}{flag}"
        )
    same = agree == len(columns) and ours.drifted == baseline.drifted and max_rel <= 1e-9
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
