"""Model training and evaluation: pure functions of arrays, seeded, so a run can be repeated."""

from __future__ import annotations

import itertools
import json
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fti_assets.training.scorer import ENSEMBLE, binned_tree_scores, build_network


@dataclass
class TrainedModel:
    """A fitted model, the files its scorer loads, and (set by each trainer) ``predict``: churn probabilities of a
    feature matrix."""

    kind: str
    params: dict
    spec: dict
    # The scorer's weight artifacts by name: "weights", or an ensemble's "weights_0", "weights_1", ...
    weights: dict[str, Path]
    spec_path: Path
    train_seconds: float = 0.0
    # One record per epoch (loss, validation loss, seconds, rows/s) for iterative models.
    history: list[dict] = field(default_factory=list)

    @property
    def artifacts(self) -> dict[str, str]:
        return {"model_json": str(self.spec_path), **{name: str(path) for name, path in self.weights.items()}}


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """PR-AUC and ROC-AUC of any score that ranks churners higher (a probability or a day count); NaN when
    ``y`` holds one class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    both_classes = len(np.unique(y)) == 2
    return {
        "pr_auc": float(average_precision_score(y, scores)) if both_classes else float("nan"),
        "roc_auc": float(roc_auc_score(y, scores)) if both_classes else float("nan"),
    }


def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, precision_score, recall_score

    predicted = (scores >= threshold).astype(int)
    return {
        **ranking_metrics(y, scores),
        "brier": float(brier_score_loss(y, scores)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "positive_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on (validation) data."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def _write_spec(out_dir: Path, spec: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def train_sklearn_baseline(
    x_train: np.ndarray, y_train: np.ndarray, features: list[str], out_dir: Path, seed: int, c: float = 1.0
) -> TrainedModel:
    """Standardized logistic regression: the simple, strong baseline every other model must beat."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    estimator = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    estimator.fit(x_train, y_train)
    weights = out_dir / "sklearn.pkl"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(pickle.dumps(estimator))
    spec = {"kind": "sklearn", "features": features}
    model = TrainedModel("sklearn", {"C": c, "seed": seed}, spec, {"weights": weights}, _write_spec(out_dir, spec))
    model.train_seconds = time.perf_counter() - started
    model.predict = lambda x: estimator.predict_proba(x)[:, 1]  # type: ignore[attr-defined]
    return model


def train_hgb(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    features: list[str],
    out_dir: Path,
    seed: int,
    learning_rate: float = 0.05,
    max_iter: int = 500,
    max_leaf_nodes: int = 7,
    min_samples_leaf: int = 200,
    l2_regularization: float = 1.0,
    max_features: float = 1.0,
    patience: int = 20,
) -> TrainedModel:
    """Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the raw features.

    Trees need no scaling and learn thresholds and interactions (a recency that matters only for frequent
    buyers) that the linear baseline cannot. Trees are added until the log-loss on the validation split (the
    period after train, as for the MLP) has not improved for ``patience`` iterations (scikit-learn keeps those
    last ``patience`` trees: at a small learning rate they change little). ``seed`` fixes the column sampling
    of ``max_features`` < 1 and the binning sample of large inputs.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    started = time.perf_counter()
    estimator = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf,
        l2_regularization=l2_regularization,
        max_features=max_features,
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=patience,
        random_state=seed,
    )
    estimator.fit(x_train, y_train, X_val=x_val, y_val=y_val)
    weights = out_dir / "hgb.pkl"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(pickle.dumps(estimator))
    spec = {"kind": "hgb", "features": features}
    params = {
        "learning_rate": learning_rate,
        "max_iter": max_iter,
        "max_leaf_nodes": max_leaf_nodes,
        "min_samples_leaf": min_samples_leaf,
        "l2_regularization": l2_regularization,
        "max_features": max_features,
        "patience": patience,
        "trees": int(estimator.n_iter_),
        # validation_score_[i] is minus the validation log-loss after i trees.
        "best_trees": int(np.argmax(estimator.validation_score_)),
        "seed": seed,
    }
    model = TrainedModel("hgb", params, spec, {"weights": weights}, _write_spec(out_dir, spec))
    model.train_seconds = time.perf_counter() - started
    # The scorer's own path: validation, test and permutation importance score as serving will.
    model.predict = binned_tree_scores(estimator) or (lambda x: estimator.predict_proba(x)[:, 1])  # type: ignore[attr-defined]
    return model


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    features: list[str],
    out_dir: Path,
    seed: int,
    device: str,
    hidden: list[int],
    max_epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    log_epoch=lambda epoch: None,
) -> TrainedModel:
    """A PyTorch MLP on standardized features, trained with Adam on ``device`` (cuda or cpu).

    Stops once the validation loss has not improved for ``patience`` epochs and keeps the best epoch's
    weights. The data moves to the device once; batches are index slices of it, so nothing copies per step.
    """
    import torch

    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    mean = x_train.mean(axis=0)
    scale = np.where(x_train.std(axis=0) > 0, x_train.std(axis=0), 1.0)

    def tensors(x_part: np.ndarray, y_part: np.ndarray):
        x_tensor = torch.as_tensor((x_part - mean) / scale, dtype=torch.float32, device=device)
        return x_tensor, torch.as_tensor(y_part, dtype=torch.float32, device=device).unsqueeze(1)

    x, y = tensors(x_train, y_train)
    xv, yv = tensors(x_val, y_val)
    network = build_network(len(features), hidden).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best_loss, best_epoch, best_state, history = float("inf"), 0, None, []
    for epoch in range(1, max_epochs + 1):
        epoch_started = time.perf_counter()
        network.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per batch
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        network.eval()
        with torch.no_grad():
            # In slices: the activations of a whole large validation set would not fit beside the model.
            val_sum = sum(
                float(loss_fn(network(xv[i : i + 65536]), yv[i : i + 65536])) * len(yv[i : i + 65536])
                for i in range(0, len(xv), 65536)
            )
            val_loss = val_sum / len(xv) if len(xv) else float("nan")
        seconds = time.perf_counter() - epoch_started
        record = {
            "epoch": epoch,
            "train_loss": float(total) / max(len(x), 1),
            "validation_loss": val_loss,
            "seconds": seconds,
            "rows_per_second": len(x) / seconds if seconds > 0 else float("inf"),
        }
        history.append(record)
        log_epoch(record)
        if val_loss < best_loss - 1e-5 or best_state is None:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    network.load_state_dict(best_state)
    network = network.to("cpu").eval()
    weights = out_dir / "mlp.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"network": network.state_dict(), "mean": torch.as_tensor(mean), "scale": torch.as_tensor(scale)},
        weights,
    )
    spec = {"kind": "mlp", "features": features, "hidden": hidden}
    params = {
        "hidden": hidden,
        "max_epochs": max_epochs,
        "patience": patience,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
    }
    model = TrainedModel(
        "mlp", {**params, "seed": seed, "device": device}, spec, {"weights": weights}, _write_spec(out_dir, spec)
    )
    model.train_seconds = time.perf_counter() - started
    model.history = history

    def predict(features_x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = network(torch.as_tensor((features_x - mean) / scale, dtype=torch.float32))
        return torch.sigmoid(logits).squeeze(1).numpy().astype("float64")

    model.predict = predict  # type: ignore[attr-defined]
    return model


def mean_in_order(scores: list[np.ndarray]) -> np.ndarray:
    """The mean of score arrays, summed in list order as the scorer sums an ensemble's members."""
    total = scores[0]
    for more in scores[1:]:
        total = total + more
    return total / len(scores)


def average_members(members: list[TrainedModel], out_dir: Path, seed: int) -> TrainedModel:
    """One model whose churn probability is the mean of the members' probabilities; the members were trained on
    the same dataset and score the same features in the same order. Its files: a spec listing the members' specs,
    and a copy of each member's weights, so that it serves without them.

    Models that err in different ways (trees' thresholds, the linear model's smooth trend, the MLP's
    interactions) can average to a better ranking than the best of them; bench/model_quality.py measures it.
    ``seed`` seeds what is drawn in evaluating it (permutation importance), as a trained model's seed does.
    """
    features = members[0].spec["features"]
    if any(member.spec["features"] != features for member in members):
        raise ValueError(f"the members of an ensemble score different features: {[m.kind for m in members]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {}
    for i, member in enumerate(members):
        source = member.weights["weights"]
        weights[f"weights_{i}"] = Path(shutil.copyfile(source, out_dir / f"member_{i}_{source.name}"))
    spec = {"kind": ENSEMBLE, "features": features, "members": [member.spec for member in members]}
    kinds = [member.kind for member in members]
    model = TrainedModel(
        ENSEMBLE, {"members": "+".join(kinds), "seed": seed}, spec, weights, _write_spec(out_dir, spec)
    )
    model.predict = lambda x: mean_in_order([member.predict(x) for member in members])  # type: ignore[attr-defined]
    return model


def best_average(
    members: list[TrainedModel], x_val: np.ndarray, y_val: np.ndarray, out_dir: Path, seed: int
) -> tuple[TrainedModel, dict[str, float]]:
    """Of the means of two or more of ``members`` (see average_members), the one with the best validation PR-AUC
    (the fewest members on a tie); and every mean's validation PR-AUC, by its members' kinds."""
    scores = [member.predict(x_val) for member in members]
    compared = {}
    for size in range(2, len(members) + 1):
        for subset in itertools.combinations(range(len(members)), size):
            pr_auc = ranking_metrics(y_val, mean_in_order([scores[i] for i in subset]))["pr_auc"]
            compared["+".join(members[i].kind for i in subset)] = (pr_auc, subset)
    name = max(compared, key=lambda key: np.nan_to_num(compared[key][0], nan=-np.inf))
    chosen = [members[i] for i in compared[name][1]]
    return average_members(chosen, out_dir, seed), {key: value for key, (value, _) in compared.items()}
