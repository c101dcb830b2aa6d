"""Drift: evaluate_drift gives Evidently DataDriftPreset's per-column scores and verdicts, fast; the report."""

import numpy as np
import pandas as pd
import pytest

from fti_assets.monitoring.drift import (
    ColumnDrift,
    DriftResult,
    DriftSettings,
    evaluate_drift,
    evaluate_drift_with_preset,
    write_drift_report,
)

COLUMNS = ["same", "shifted", "scaled", "with_gaps", "constant", "integer"]


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """No drift, a shifted and a scaled column, NaN/inf gaps, a constant and an int column."""
    rng = np.random.default_rng(seed)

    def side(shift: float, scale: float) -> pd.DataFrame:
        gaps = rng.normal(0.0, 1.0, rows)
        return pd.DataFrame(
            {
                "same": rng.normal(10.0, 2.0, rows),
                "shifted": rng.normal(shift, 1.0, rows),
                "scaled": rng.gamma(2.0, 3.0, rows) * scale,
                "with_gaps": gaps,
                "constant": np.full(rows, 7.0),
                "integer": rng.integers(0, 200, rows),
            }
        )

    reference, current = side(0.0, 1.0), side(0.5, 1.5)
    reference.loc[reference.index[::13], "with_gaps"] = np.inf
    reference.loc[reference.index[5::17], "with_gaps"] = -np.inf
    current.loc[current.index[::7], "with_gaps"] = np.nan
    return reference, current


def assert_same_as_preset(ours: DriftResult, preset: DriftResult) -> None:
    assert [c.column for c in ours.columns] == [c.column for c in preset.columns]
    for mine, theirs in zip(ours.columns, preset.columns, strict=True):
        assert mine.drifted == theirs.drifted, (mine, theirs)
        # Wasserstein is fed sorted columns: the reference std may differ from the preset's in the last bit.
        assert mine.score == pytest.approx(theirs.score, rel=1e-12), (mine, theirs)
    assert ours.drifted_share == preset.drifted_share
    assert ours.drifted == preset.drifted


@pytest.mark.parametrize("rows", [5_000, 20_000])
@pytest.mark.parametrize("method", ["wasserstein", "psi"])
def test_scores_and_verdicts_match_the_preset(method, rows):
    reference, current = frames(rows)
    settings = DriftSettings(method=method, column_threshold=0.1)
    ours = evaluate_drift(reference, current, COLUMNS, settings)
    assert_same_as_preset(ours, evaluate_drift_with_preset(reference, current, COLUMNS, settings))
    verdicts = {c.column: c.drifted for c in ours.columns}
    assert verdicts == {
        "same": False,
        "shifted": True,
        "scaled": True,
        "with_gaps": False,
        "constant": False,
        "integer": False,
    }
    assert ours.drifted_share == pytest.approx(2 / 6)
    assert (ours.reference_rows, ours.current_rows) == (rows, rows)


def test_ks_p_values_match_the_preset():
    reference, current = frames(5_000, seed=1)
    settings = DriftSettings(method="ks", column_threshold=0.05)
    ours = evaluate_drift(reference, current, COLUMNS, settings)
    assert_same_as_preset(ours, evaluate_drift_with_preset(reference, current, COLUMNS, settings))
    assert {c.column for c in ours.columns if c.drifted} == {"shifted", "scaled"}


def test_a_score_on_the_threshold_is_recomputed_in_the_presets_row_order():
    reference, current = frames(5_000, seed=2)
    first = evaluate_drift(reference, current, ["same"], DriftSettings())
    settings = DriftSettings(column_threshold=first.columns[0].score)
    ours = evaluate_drift(reference, current, ["same"], settings)
    preset = evaluate_drift_with_preset(reference, current, ["same"], settings)
    assert ours.columns[0].score == preset.columns[0].score
    assert ours.columns[0].drifted == preset.columns[0].drifted


def test_nan_and_inf_are_dropped_per_column():
    reference, current = frames(5_000)
    settings = DriftSettings()
    with_gaps = evaluate_drift(reference, current, ["with_gaps", "same"], settings)
    finite_ref = reference.loc[np.isfinite(reference["with_gaps"]), ["with_gaps"]]
    finite_cur = current.loc[np.isfinite(current["with_gaps"]), ["with_gaps"]]
    without = evaluate_drift(finite_ref, finite_cur, ["with_gaps"], settings)
    assert with_gaps.columns[0].score == without.columns[0].score
    # Other columns keep all their rows: dropping is per column, not per row.
    assert with_gaps.columns[1].score == evaluate_drift(reference, current, ["same"], settings).columns[0].score


def test_the_drifted_share_rule_is_at_least_the_threshold_as_in_the_preset():
    rng = np.random.default_rng(3)
    rows, columns = 2_000, [f"c{i}" for i in range(5)]
    reference = pd.DataFrame({c: rng.normal(0.0, 1.0, rows) for c in columns})
    current = pd.DataFrame({c: rng.normal(1.0 if i < 2 else 0.0, 1.0, rows) for i, c in enumerate(columns)})
    at_boundary = DriftSettings(drifted_share_threshold=0.4)
    ours = evaluate_drift(reference, current, columns, at_boundary)
    assert ours.drifted_share == 0.4
    assert ours.drifted
    assert_same_as_preset(ours, evaluate_drift_with_preset(reference, current, columns, at_boundary))
    assert not evaluate_drift(reference, current, columns, DriftSettings(drifted_share_threshold=0.41)).drifted


def test_metadata_is_json_and_summary_names_the_drifted_columns():
    import json

    result = DriftResult(
        columns=[
            ColumnDrift("a", "wasserstein", 0.25, 0.1, True),
            ColumnDrift("b", "wasserstein", 0.01, 0.1, False),
        ],
        drifted_share=0.5,
        drifted=True,
        reference_rows=10,
        current_rows=20,
    )
    metadata = json.loads(json.dumps(result.as_metadata()))
    assert metadata["drifted_share"] == 0.5
    assert metadata["columns"]["a"] == {"score": 0.25, "method": "wasserstein", "threshold": 0.1, "verdict": "drift"}
    assert metadata["columns"]["b"]["verdict"] == "ok"
    assert "1/2 columns" in result.summary() and "a (wasserstein 0.25" in result.summary()


def test_report_is_html_from_a_named_sample(tmp_path):
    reference, current = frames(2_000)
    path = tmp_path / "reports" / "drift.html"
    written = write_drift_report(
        reference, current, COLUMNS, DriftSettings(report_sample_rows=500), path, "Feature drift 2026-03-01"
    )
    assert written == path and path.is_file()
    page = path.read_text(encoding="utf-8")
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert "<title>Feature drift 2026-03-01</title>" in page
    assert "500 of 2,000 reference rows and 500 of 2,000 current rows" in page
    assert "drift-report-note" in page and "DataDriftPreset" in page
    assert [p.name for p in path.parent.iterdir()] == ["drift.html"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, c, cols: (r.iloc[:0], c, cols), "reference data has no rows"),
        (lambda r, c, cols: (r, c.iloc[:0], cols), "current data has no rows"),
        (lambda r, c, cols: (r, c.drop(columns="same"), cols), r"current data lacks columns \['same'\]"),
        (lambda r, c, cols: (r, c, []), "no columns"),
        (lambda r, c, cols: (r, c, ["same", "same"]), "duplicate columns"),
        (lambda r, c, cols: (r, c.assign(same="x"), cols), "column 'same' in the current data is object, not numeric"),
        (lambda r, c, cols: (r.assign(same=np.nan), c, cols), "column 'same' has no finite values in the reference"),
    ],
)
def test_bad_inputs_raise_clearly(change, message):
    reference, current = frames(100)
    reference, current, columns = change(reference, current, ["same", "shifted"])
    with pytest.raises(ValueError, match=message):
        evaluate_drift(reference, current, columns, DriftSettings())


def test_bad_settings_raise_clearly():
    reference, current = frames(100)
    with pytest.raises(ValueError, match="No stattest found of name nonsense"):
        evaluate_drift(reference, current, ["same"], DriftSettings(method="nonsense"))
    with pytest.raises(ValueError, match="drifted_share_threshold"):
        DriftSettings(drifted_share_threshold=0)
    with pytest.raises(ValueError, match="report_sample_rows"):
        DriftSettings(report_sample_rows=0)


@pytest.mark.parametrize("seed", range(4))
def test_wasserstein_by_merging_equals_scipys_with_ties_and_other_sizes(seed):
    from scipy.stats import wasserstein_distance

    from fti_assets.monitoring.drift import Distribution

    rng = np.random.default_rng(seed)
    # Integers tie within and across the samples; floats do not; sizes differ by far. A count column of the
    # reference stays int64 while a day's values can be fractions (a scaled or averaged column).
    for reference, current in (
        (rng.integers(0, 9, 5_000), rng.integers(2, 12, 37)),
        (rng.integers(0, 90, 4_000), rng.integers(0, 90, 900) * 1.5),
        (rng.integers(0, 90, 4_000), rng.normal(45.0, 20.0, 900)),
        (rng.normal(0, 1, 3_000), rng.normal(0.3, 2, 1)),
        (rng.gamma(2.0, 3.0, 10), rng.gamma(2.0, 3.0, 20_000)),
    ):
        expected = wasserstein_distance(reference, current)
        distance = Distribution.of_sorted(np.sort(reference)).wasserstein(np.sort(current))
        assert distance == pytest.approx(expected, rel=1e-12)


def test_a_sorted_reference_judges_many_days_as_the_frame_does():
    from fti_assets.monitoring.drift import SortedReference

    reference, _ = frames(5_000)
    prepared = SortedReference(reference)
    for seed in range(3):
        current = frames(2_000, seed=seed + 10)[1]
        for method in ("wasserstein", "ks", "psi"):
            settings = DriftSettings(method=method, column_threshold=0.05 if method == "ks" else 0.1)
            assert evaluate_drift(prepared, current, COLUMNS, settings) == evaluate_drift(
                reference, current, COLUMNS, settings
            )


def test_the_default_method_away_from_its_threshold_does_not_import_evidently():
    """Evidently's import takes seconds; a run whose verdicts need none of its stat tests does not pay it."""
    import subprocess
    import sys

    code = (
        "import sys; from fti_assets_tests.test_drift import frames, COLUMNS; "
        "from fti_assets.monitoring.drift import DriftSettings, evaluate_drift; "
        "reference, current = frames(2_000); result = evaluate_drift(reference, current, COLUMNS, DriftSettings()); "
        "assert result.drifted; print(sorted(m for m in sys.modules if m.split('.')[0] == 'evidently'))"
    )
    from fti_assets.settings import PROJECT_ROOT

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert done.stdout.strip() == "[]"
