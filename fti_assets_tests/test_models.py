"""Model training, scoring through the stored scorer, metrics and the promotion policy."""

import json

import numpy as np
import pandas as pd
import pytest

from fti_assets.settings import GateSettings
from fti_assets.training.evaluation import (
    beats_champion_gate,
    beats_recency_gate,
    calibration_gate,
    evaluate_gates,
    fairness_gate,
    permutation_importance,
)
from fti_assets.training.models import (
    average_members,
    best_average,
    best_f1_threshold,
    classification_metrics,
    mean_in_order,
    ranking_metrics,
    train_hgb,
    train_mlp,
    train_sklearn_baseline,
)

FEATURES = ["f1", "f2", "f3"]
GATES = GateSettings(min_group_rows=100)


def synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 50.0, 0.1]
    logit = 1.5 * x[:, 0] - 0.03 * x[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def test_sklearn_baseline_learns_and_saves_what_the_scorer_loads(tmp_path):
    x, y = synthetic()
    model = train_sklearn_baseline(x, y, FEATURES, tmp_path, seed=1)
    metrics = classification_metrics(y, model.predict(x), 0.5)
    assert metrics["roc_auc"] > 0.75
    assert json.loads(model.spec_path.read_text()) == {"kind": "sklearn", "features": FEATURES}
    assert model.weights["weights"].exists()


def nonlinear(n=4000, seed=0):
    """Churn when recency-like f1 is far from typical in either direction, more so for large f2: no linear
    function of the features ranks it (the logistic regression is near chance), trees do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logit = 2.5 * (np.abs(x[:, 0]) - 0.8) * (1 + (x[:, 1] > 0)) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def small_mlp(x, y, out_dir, x_val=None, y_val=None, **overrides):
    """A quick MLP on the CPU, validated on its training rows unless told otherwise."""
    settings = dict(seed=1, hidden=[8], max_epochs=3, patience=1, batch_size=512, learning_rate=1e-2)
    validation = (x, y) if x_val is None else (x_val, y_val)
    return train_mlp(x, y, *validation, FEATURES, out_dir, device="cpu", **{**settings, **overrides})


def test_hgb_learns_a_nonlinear_signal_the_logistic_regression_cannot(tmp_path):
    x, y = nonlinear()
    xv, yv = nonlinear(1500, seed=1)
    xt, yt = nonlinear(3000, seed=2)
    trees = train_hgb(x, y, xv, yv, FEATURES, tmp_path / "hgb", seed=1)
    linear = train_sklearn_baseline(x, y, FEATURES, tmp_path / "lr", seed=1)
    tree_auc = classification_metrics(yt, trees.predict(xt), 0.5)["roc_auc"]
    linear_auc = classification_metrics(yt, linear.predict(xt), 0.5)["roc_auc"]
    assert tree_auc > 0.8 and linear_auc < 0.6, (tree_auc, linear_auc)
    # Early stopping on the validation split ended it well before the upper bound.
    assert trees.params["best_trees"] <= trees.params["trees"] < 500
    assert json.loads(trees.spec_path.read_text()) == {"kind": "hgb", "features": FEATURES}


def test_hgb_training_is_reproducible_for_a_seed(tmp_path):
    x, y = nonlinear()
    xv, yv = nonlinear(1500, seed=1)
    # Column sampling, so the seed matters.
    kwargs = dict(max_features=0.5, max_iter=60)
    first = train_hgb(x, y, xv, yv, FEATURES, tmp_path / "a", seed=3, **kwargs)
    second = train_hgb(x, y, xv, yv, FEATURES, tmp_path / "b", seed=3, **kwargs)
    other = train_hgb(x, y, xv, yv, FEATURES, tmp_path / "c", seed=4, **kwargs)
    np.testing.assert_array_equal(first.predict(x), second.predict(x))
    assert not np.array_equal(first.predict(x), other.predict(x))
    assert first.weights["weights"].read_bytes() == second.weights["weights"].read_bytes()


def test_permutation_importance_finds_the_one_feature_that_carries_the_signal(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 3))
    y = (rng.random(30_000) < 1 / (1 + np.exp(-3 * x[:, 1]))).astype(int)
    model = train_sklearn_baseline(x, y, FEATURES, tmp_path, seed=1)
    calls = []

    def predict(rows):
        calls.append(len(rows))
        return model.predict(rows)

    importance = permutation_importance(predict, x, y, FEATURES, seed=5, repeats=2, max_rows=20_000)
    assert list(importance.columns) == ["feature", "importance", "std"]
    assert importance["feature"].iloc[0] == "f2" and importance["importance"].iloc[0] > 0.2
    assert importance.set_index("feature").loc[["f1", "f3"], "importance"].abs().max() < 0.01
    # A seeded sample of at most max_rows rows: one baseline and repeats x features shuffles.
    assert calls == [20_000] * (1 + 2 * 3)
    again = permutation_importance(model.predict, x, y, FEATURES, seed=5, repeats=2, max_rows=20_000)
    pd.testing.assert_frame_equal(importance, again)
    one_class = permutation_importance(model.predict, x, np.zeros(len(x), dtype=int), FEATURES, seed=5)
    assert one_class["importance"].isna().all()


def test_mlp_training_is_reproducible_for_a_seed(tmp_path):
    x, y = synthetic()
    xv, yv = synthetic(500, seed=1)
    kwargs = dict(seed=5, device="cpu", hidden=[16], max_epochs=3, patience=3, batch_size=256, learning_rate=1e-2)
    first = train_mlp(x, y, xv, yv, FEATURES, tmp_path / "a", **kwargs)
    second = train_mlp(x, y, xv, yv, FEATURES, tmp_path / "b", **kwargs)
    other = train_mlp(x, y, xv, yv, FEATURES, tmp_path / "c", **{**kwargs, "seed": 6})
    np.testing.assert_array_equal(first.predict(x), second.predict(x))
    assert not np.array_equal(first.predict(x), other.predict(x))
    assert classification_metrics(y, first.predict(x), 0.5)["roc_auc"] > 0.75


def test_mlp_stops_when_validation_stops_improving_and_keeps_the_best_epoch(tmp_path):
    x, y = synthetic(3000)
    # Labels of the validation rows are noise: past the first epochs, training only overfits to it.
    xv = synthetic(800, seed=2)[0]
    yv = np.random.default_rng(3).integers(0, 2, len(xv))
    epochs = []
    model = small_mlp(
        x,
        y,
        tmp_path,
        xv,
        yv,
        hidden=[32],
        max_epochs=40,
        patience=2,
        batch_size=64,
        learning_rate=3e-2,
        log_epoch=epochs.append,
    )
    assert len(epochs) < 40
    best = min(epochs, key=lambda r: r["validation_loss"])
    assert model.params["best_epoch"] == best["epoch"] == len(epochs) - 2
    assert all(r["rows_per_second"] > 0 and r["seconds"] > 0 for r in epochs)
    # The saved weights are the best epoch's: the stored model's validation loss is the best one.
    import torch

    scores = np.clip(model.predict(xv), 1e-7, 1 - 1e-7)
    loss = float(torch.nn.functional.binary_cross_entropy(torch.tensor(scores), torch.tensor(yv, dtype=torch.float64)))
    assert loss == pytest.approx(best["validation_loss"], abs=1e-4)


def test_the_stored_scorer_gives_the_training_scores(tmp_path):
    import pandas as pd
    from mlflow.pyfunc import PythonModelContext

    from fti_assets.training.scorer import ChurnScorer

    x, y = synthetic()
    for model in (
        train_sklearn_baseline(x, y, FEATURES, tmp_path / "s", seed=1),
        train_hgb(x, y, x, y, FEATURES, tmp_path / "h", seed=1, max_iter=30),
        small_mlp(x, y, tmp_path / "m"),
    ):
        scorer = ChurnScorer()
        scorer.load_context(PythonModelContext(artifacts=model.artifacts, model_config={}))
        frame = pd.DataFrame(x, columns=FEATURES).assign(extra="ignored")
        np.testing.assert_allclose(scorer.predict(None, frame), model.predict(x), rtol=1e-5, atol=1e-6)
        # The online service's entry point: a float matrix, one row at a time too.
        np.testing.assert_allclose(scorer.predict_matrix(x[:1]), model.predict(x[:1]), rtol=1e-5, atol=1e-6)


def test_an_ensemble_serves_the_mean_of_its_members_from_its_own_files(tmp_path):
    """The stored scorer of an ensemble loads its copies of the members' weights and scores each row as the mean
    of the members' scores, summed in member order, bit for bit."""
    import shutil

    from mlflow.pyfunc import PythonModelContext

    from fti_assets.training.assets.common import pip_requirements
    from fti_assets.training.scorer import ChurnScorer

    x, y = synthetic()
    members = [
        train_sklearn_baseline(x, y, FEATURES, tmp_path / "members" / "s", seed=1),
        train_hgb(x, y, x, y, FEATURES, tmp_path / "members" / "h", seed=1, max_iter=30),
        small_mlp(x, y, tmp_path / "members" / "m"),
    ]
    ensemble = average_members(members, tmp_path / "ensemble", seed=3)
    assert ensemble.kind == "ensemble" and ensemble.params == {"members": "sklearn+hgb+mlp", "seed": 3}
    member_scorers = []
    for member in members:
        scorer = ChurnScorer()
        scorer.load_context(PythonModelContext(artifacts=member.artifacts, model_config={}))
        member_scorers.append(scorer)
    x[::9, 2] = np.nan  # missing values count as 0, as in predict
    expected = mean_in_order([scorer.predict_matrix(x) for scorer in member_scorers])
    shutil.rmtree(tmp_path / "members")  # serving needs only the ensemble's own files
    scorer = ChurnScorer()
    scorer.load_context(PythonModelContext(artifacts=ensemble.artifacts, model_config={}))
    assert set(ensemble.artifacts) == {"model_json", "weights_0", "weights_1", "weights_2"}
    np.testing.assert_array_equal(scorer.predict_matrix(x), expected)
    # One row (the online service's call) scores as its members score that row, summed the same way.
    for row in range(0, len(x), 97):
        one = x[row : row + 1]
        assert scorer.predict_matrix(one)[0] == mean_in_order([s.predict_matrix(one) for s in member_scorers])[0]
    frame = pd.DataFrame(x, columns=FEATURES).assign(extra="ignored")
    np.testing.assert_array_equal(scorer.predict(None, frame), expected)
    # What training evaluates the ensemble with: the members' own predict, the same scores to rounding.
    np.testing.assert_allclose(ensemble.predict(np.nan_to_num(x)), expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(expected, member_scorers[0].predict_matrix(x))
    requirements = {r.split("==")[0] for r in pip_requirements(ensemble.spec)}
    assert {"torch", "scikit-learn", "mlflow"} <= requirements
    assert "torch" not in {r.split("==")[0] for r in pip_requirements(members[1].spec)}

    other = train_sklearn_baseline(x[:, :2], y, FEATURES[:2], tmp_path / "two", seed=1)
    with pytest.raises(ValueError, match="different features"):
        average_members([members[0], other], tmp_path / "mixed", seed=3)


def test_the_ensemble_averages_the_members_with_the_best_validation_pr_auc(tmp_path):
    x, y = synthetic()
    x_val, y_val = synthetic(seed=1)
    good_linear = train_sklearn_baseline(x, y, FEATURES, tmp_path / "s", seed=1)
    good_mlp = small_mlp(x, y, tmp_path / "m")
    backwards = train_sklearn_baseline(x, 1 - y, FEATURES, tmp_path / "b", seed=1)  # ranks churners last
    ensemble, compared = best_average([good_linear, good_mlp, backwards], x_val, y_val, tmp_path / "e", seed=1)
    assert list(compared) == ["sklearn+mlp", "sklearn+sklearn", "mlp+sklearn", "sklearn+mlp+sklearn"]
    assert ensemble.params["members"] == "sklearn+mlp"
    assert compared["sklearn+mlp"] == max(compared.values()) > compared["sklearn+mlp+sklearn"]
    pair = mean_in_order([good_linear.predict(x_val), good_mlp.predict(x_val)])
    assert compared["sklearn+mlp"] == ranking_metrics(y_val, pair)["pr_auc"]
    np.testing.assert_array_equal(ensemble.predict(x_val), pair)


def test_metrics_and_threshold():
    y = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = classification_metrics(y, scores, 0.5)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["recall"] == 0.5 and metrics["precision"] == 1.0
    assert metrics["brier"] == pytest.approx(np.mean((scores - y) ** 2))
    assert best_f1_threshold(y, scores) == pytest.approx(0.35)


def test_first_model_must_beat_a_trivial_baseline():
    y = np.array([0] * 70 + [1] * 30)
    informative = np.where(y == 1, 0.7, 0.2)
    assert beats_champion_gate(y, informative, None, GATES).passed
    constant = np.full(100, 0.3)
    gate = beats_champion_gate(y, constant, None, GATES)
    assert not gate.passed and "first model" in gate.reason


def test_a_candidate_must_beat_the_champion_on_the_same_rows_by_the_margin():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = y * 0.5 + rng.random(2000) * 0.5
    worse = y * 0.2 + rng.random(2000) * 0.5
    assert beats_champion_gate(y, good, worse, GATES).passed
    gate = beats_champion_gate(y, worse, good, GATES)
    assert not gate.passed and "gain -" in gate.reason
    strict = GATES.model_copy(update={"min_pr_auc_gain": 0.5})
    assert not beats_champion_gate(y, good, worse, strict).passed


def test_calibration_gate_bounds_the_brier_score():
    y = np.array([0, 1, 0, 1])
    assert calibration_gate(y, np.array([0.1, 0.9, 0.2, 0.8]), GATES).passed
    assert not calibration_gate(y, np.array([0.9, 0.1, 0.8, 0.2]), GATES).passed


def test_fairness_gate_compares_recall_and_positive_rate_across_groups_with_enough_rows():
    groups = pd.Series(["a"] * 300 + ["b"] * 300 + ["tiny"] * 10)
    y = np.array(([1, 0] * 150) * 2 + [1] * 10)
    fair = y.copy()
    assert fairness_gate(y, fair, groups, GATES).passed
    unfair = fair.copy()
    unfair[300:600] = 0  # group b: nobody flagged
    gate = fairness_gate(y, unfair, groups, GATES)
    assert not gate.passed
    assert gate.values["recall_gap"] == pytest.approx(1.0) and gate.values["b"]["positive_rate"] == 0.0
    # The tiny group is reported but not gated.
    only_tiny_differs = fair.copy()
    only_tiny_differs[600:] = 0
    assert fairness_gate(y, only_tiny_differs, groups, GATES).passed


def test_a_candidate_must_beat_recency_alone_on_both_metrics():
    rng = np.random.default_rng(0)
    days = rng.integers(0, 90, 2000).astype("float64")
    # Churners are the long-silent, with noise: recency alone ranks them well.
    y = (days + rng.normal(0, 25, 2000) > 60).astype(int)
    below = 1 / (1 + np.exp(-(days - 60) / 10)) + rng.normal(0, 0.3, 2000)  # recency, blurred
    gate = beats_recency_gate(y, below, days, GATES)
    assert not gate.passed and "vs recency alone" in gate.reason
    assert gate.values["recency_roc_auc"] > gate.values["candidate_roc_auc"]
    knows_more = 1 / (1 + np.exp(-(days - 60 + (y - 0.5) * 40) / 10))  # recency plus what it cannot see
    assert beats_recency_gate(y, knows_more, days, GATES).passed
    strict = GATES.model_copy(update={"min_gain_over_recency": 0.5})
    assert not beats_recency_gate(y, knows_more, days, strict).passed
    # The bar is a gain of at least min_gain_over_recency: at the default 0 a tie passes, above it fails.
    assert beats_recency_gate(y, days, days, GATES).passed
    assert not beats_recency_gate(y, days, days, GATES.model_copy(update={"min_gain_over_recency": 1e-9})).passed
    unmeasured = beats_recency_gate(y, below, None, GATES)
    assert unmeasured.passed and "not measured" in unmeasured.reason


def test_gate_report_names_every_failed_gate():
    y = np.array([0, 1] * 150)
    report = evaluate_gates(
        y, np.full(300, 0.5), 0.5, None, pd.Series(["a"] * 300), GATES, days_since_last_purchase=y * 10.0
    )
    assert not report.passed
    assert report.reason.startswith("beats_champion:")
    assert "beats_recency:" in report.reason
    assert set(report.to_dict()["gates"]) == {"beats_champion", "beats_recency", "calibration", "fairness"}


def test_the_scorer_scores_a_matrix_exactly_as_the_fitted_pipeline(tmp_path):
    """The online service's entry point: the scaler + logistic regression arithmetic without sklearn's per-call
    checks gives predict_proba's scores (to the last bits of the sum's order), and each row's score the same bit
    for bit whatever else the call holds; any other estimator goes through predict_proba."""
    from mlflow.pyfunc import PythonModelContext
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from fti_assets.training.scorer import ChurnScorer, _scaled_logistic

    x, y = synthetic()
    model = train_sklearn_baseline(x, y, FEATURES, tmp_path, seed=1)
    scorer = ChurnScorer()
    scorer.load_context(PythonModelContext(artifacts=model.artifacts, model_config={}))
    assert scorer.linear is not None
    x[::7, 1] = np.nan  # missing values count as 0, as in predict
    expected = scorer.estimator.predict_proba(np.where(np.isnan(x), 0.0, x))[:, 1]
    scores = scorer.predict_matrix(x)
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(scorer.predict(None, pd.DataFrame(x, columns=FEATURES)), scores)
    # Wide enough (27 features, as v2) that a matrix product sums in another order for another number of rows.
    wide_x = np.hstack([x, np.random.default_rng(2).normal(size=(len(x), 24)) * 100])
    wide_names = [*FEATURES, *(f"noise_{i}" for i in range(24))]
    wide = ChurnScorer()
    artifacts = train_sklearn_baseline(np.nan_to_num(wide_x), y, wide_names, tmp_path / "wide", seed=1).artifacts
    wide.load_context(PythonModelContext(artifacts=artifacts, model_config={}))
    together = wide.predict_matrix(wide_x[:200])
    assert all(wide.predict_matrix(wide_x[row : row + 1])[0] == together[row] for row in range(200))

    other = make_pipeline(MinMaxScaler(), scorer.estimator.steps[-1][1])
    assert _scaled_logistic(other) is None
    scorer.estimator, scorer.linear = other.fit(np.where(np.isnan(x), 0.0, x), y), None
    np.testing.assert_array_equal(scorer.predict_matrix(x), other.predict_proba(np.where(np.isnan(x), 0.0, x))[:, 1])


def test_the_scorer_walks_gradient_boosted_trees_exactly_as_scikit_learn(tmp_path):
    """Small inputs (the online service's one row) are walked in numpy, all trees at once, larger ones through the
    trees on binned values: the scores are predict_proba's bit for bit, missing values and edges included."""
    from mlflow.pyfunc import PythonModelContext

    from fti_assets.training.scorer import TREE_WALK_MAX_ROWS, ChurnScorer, _walk_trees

    x, y = nonlinear()
    model = train_hgb(x, y, *nonlinear(1500, seed=1), FEATURES, tmp_path, seed=1)
    scorer = ChurnScorer()
    scorer.load_context(PythonModelContext(artifacts=model.artifacts, model_config={}))
    assert scorer.trees is not None and len(scorer.trees["roots"]) == model.params["trees"]
    small = x[:TREE_WALK_MAX_ROWS].copy()
    small[::5, 0] = np.nan  # missing values count as 0, as in predict
    expected = scorer.estimator.predict_proba(np.where(np.isnan(small), 0.0, small))[:, 1]
    np.testing.assert_array_equal(scorer.predict_matrix(small), expected)
    np.testing.assert_array_equal(scorer.predict_matrix(small[3:4]), expected[3:4])
    assert scorer.binned is not None and len(x) > TREE_WALK_MAX_ROWS
    larger = x.copy()
    larger[::7, 2] = np.nan
    larger[1::7, 0] = np.inf  # beyond every bin edge
    larger[3::7, 0] = -np.inf
    larger[2::7, 1] = scorer.estimator._bin_mapper.bin_thresholds_[1][3]  # on a bin edge: a split there goes left
    np.testing.assert_array_equal(
        scorer.predict_matrix(larger), scorer.estimator.predict_proba(np.where(np.isnan(larger), 0.0, larger))[:, 1]
    )
    # Training's evaluation scores as the scorer does, with the trees' own rule for missing values.
    np.testing.assert_array_equal(model.predict(larger), scorer.estimator.predict_proba(larger)[:, 1])
    # The trees' own rule for missing values, walked as scikit-learn walks it.
    np.testing.assert_array_equal(_walk_trees(scorer.trees, small), scorer.estimator.predict_proba(small)[:, 1])
