"""Model training and evaluation: pure functions of arrays, seeded, so a run can be repeated."""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fti_assets.training.scorer import build_network


@dataclass
class TrainedModel:
    """A fitted model, its scores on validation and test, and the files its scorer loads."""

    kind: str
    params: dict
    spec: dict
    weights_path: Path
    spec_path: Path
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    train_seconds: float = 0.0

    @property
    def artifacts(self) -> dict[str, str]:
        return {"model_json": str(self.spec_path), "weights": str(self.weights_path)}


def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (scores >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "pr_auc": float(average_precision_score(y, scores)) if both_classes else float("nan"),
        "roc_auc": float(roc_auc_score(y, scores)) if both_classes else float("nan"),
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
    model = TrainedModel("sklearn", {"C": c, "seed": seed}, spec, weights, _write_spec(out_dir, spec))
    model.train_seconds = time.perf_counter() - started
    model.predict = lambda x: estimator.predict_proba(x)[:, 1]  # type: ignore[attr-defined]
    return model


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    features: list[str],
    out_dir: Path,
    seed: int,
    device: str,
    hidden: list[int],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    log_epoch=lambda epoch, loss: None,
) -> TrainedModel:
    """A PyTorch MLP on standardized features, trained with Adam on ``device`` (cuda or cpu)."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    mean = x_train.mean(axis=0)
    scale = np.where(x_train.std(axis=0) > 0, x_train.std(axis=0), 1.0)
    x = torch.as_tensor((x_train - mean) / scale, dtype=torch.float32, device=device)
    y = torch.as_tensor(y_train, dtype=torch.float32, device=device).unsqueeze(1)
    network = build_network(len(features), hidden).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        log_epoch(epoch, total / len(x))
    network = network.to("cpu").eval()
    weights = out_dir / "mlp.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"network": network.state_dict(), "mean": torch.as_tensor(mean), "scale": torch.as_tensor(scale)},
        weights,
    )
    spec = {"kind": "mlp", "features": features, "hidden": hidden}
    params = {"hidden": hidden, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    model = TrainedModel("mlp", {**params, "seed": seed, "device": device}, spec, weights, _write_spec(out_dir, spec))
    model.train_seconds = time.perf_counter() - started

    def predict(features_x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = network(torch.as_tensor((features_x - mean) / scale, dtype=torch.float32))
        return torch.sigmoid(logits).squeeze(1).numpy().astype("float64")

    model.predict = predict  # type: ignore[attr-defined]
    return model
