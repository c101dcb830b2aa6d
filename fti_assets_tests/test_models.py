"""Model training, scoring through the stored scorer, metrics and the promotion policy."""

import json

import numpy as np
import pytest

from fti_assets.training.evaluation import promotion_decision
from fti_assets.training.models import (
    best_f1_threshold,
    classification_metrics,
    train_mlp,
    train_sklearn_baseline,
)

FEATURES = ["f1", "f2", "f3"]


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
    assert model.weights_path.exists()


def test_mlp_training_is_reproducible_for_a_seed(tmp_path):
    x, y = synthetic()
    kwargs = dict(seed=5, device="cpu", hidden=[16], epochs=3, batch_size=256, learning_rate=1e-2)
    first = train_mlp(x, y, FEATURES, tmp_path / "a", **kwargs)
    second = train_mlp(x, y, FEATURES, tmp_path / "b", **kwargs)
    other = train_mlp(x, y, FEATURES, tmp_path / "c", **{**kwargs, "seed": 6})
    np.testing.assert_array_equal(first.predict(x), second.predict(x))
    assert not np.array_equal(first.predict(x), other.predict(x))
    assert classification_metrics(y, first.predict(x), 0.5)["roc_auc"] > 0.75


def test_the_stored_scorer_gives_the_training_scores(tmp_path):
    import pandas as pd
    from mlflow.pyfunc import PythonModelContext

    from fti_assets.training.scorer import ChurnScorer

    x, y = synthetic()
    for model in (
        train_sklearn_baseline(x, y, FEATURES, tmp_path / "s", seed=1),
        train_mlp(
            x,
            y,
            FEATURES,
            tmp_path / "m",
            seed=1,
            device="cpu",
            hidden=[8],
            epochs=2,
            batch_size=512,
            learning_rate=1e-2,
        ),
    ):
        scorer = ChurnScorer()
        scorer.load_context(PythonModelContext(artifacts=model.artifacts, model_config={}))
        frame = pd.DataFrame(x, columns=FEATURES).assign(extra="ignored")
        np.testing.assert_allclose(scorer.predict(None, frame), model.predict(x), rtol=1e-5, atol=1e-6)


def test_metrics_and_threshold():
    y = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = classification_metrics(y, scores, 0.5)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["recall"] == 0.5 and metrics["precision"] == 1.0
    assert metrics["brier"] == pytest.approx(np.mean((scores - y) ** 2))
    assert best_f1_threshold(y, scores) == pytest.approx(0.35)


def test_first_model_must_beat_a_trivial_baseline():
    good = {"test_pr_auc": 0.6, "test_roc_auc": 0.8, "test_positive_rate": 0.3}
    assert promotion_decision(good, None).promote
    trivial = {"test_pr_auc": 0.29, "test_roc_auc": 0.5, "test_positive_rate": 0.3}
    decision = promotion_decision(trivial, None)
    assert not decision.promote and "trivial" in decision.reason


def test_a_later_model_must_match_the_champion():
    champion = {"test_pr_auc": 0.6, "test_roc_auc": 0.8}
    assert promotion_decision({"test_pr_auc": 0.6, "test_roc_auc": 0.7}, champion).promote
    worse = promotion_decision({"test_pr_auc": 0.59, "test_roc_auc": 0.9}, champion)
    assert not worse.promote and "0.590 < champion's 0.600" in worse.reason
