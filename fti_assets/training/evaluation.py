"""Promotion gates (quality against the champion and against recency alone on the same test rows, calibration,
fairness) and what a model's scores depend on (permutation importance)."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fti_assets.settings import GateSettings
from fti_assets.training.models import classification_metrics, ranking_metrics


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    reason: str
    values: dict


@dataclass(frozen=True)
class GateReport:
    gates: list[Gate]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def reason(self) -> str:
        failed = [g for g in self.gates if not g.passed]
        return "; ".join(f"{g.name}: {g.reason}" for g in failed) if failed else "all gates passed"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "gates": {g.name: asdict(g) for g in self.gates}}


def beats_champion_gate(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray | None, gates: GateSettings) -> Gate:
    """PR-AUC gain by at least the margin and ROC-AUC no worse than the tolerance, both models scored on the
    candidate's test rows. With no champion yet, the bar is a trivial model: PR-AUC above the positive rate."""
    cand = classification_metrics(y, candidate, 0.5)
    if champion is None:
        passed = cand["pr_auc"] > cand["positive_rate"] and cand["roc_auc"] > 0.5
        reason = (
            f"first model: PR-AUC {cand['pr_auc']:.3f} vs positive rate {cand['positive_rate']:.3f}, "
            f"ROC-AUC {cand['roc_auc']:.3f}"
        )
        return Gate("beats_champion", passed, reason, {"candidate_pr_auc": cand["pr_auc"]})
    champ = classification_metrics(y, champion, 0.5)
    gain, drop = cand["pr_auc"] - champ["pr_auc"], champ["roc_auc"] - cand["roc_auc"]
    passed = gain >= gates.min_pr_auc_gain and drop <= gates.max_roc_auc_drop
    reason = (
        f"PR-AUC {cand['pr_auc']:.3f} vs champion {champ['pr_auc']:.3f} (gain {gain:+.3f}, needs "
        f">= {gates.min_pr_auc_gain:+.3f}); ROC-AUC drop {drop:+.3f} (allowed {gates.max_roc_auc_drop:.3f})"
    )
    return Gate("beats_champion", passed, reason, paired_aucs(cand, champ, "champion"))


def beats_recency_gate(
    y: np.ndarray, candidate: np.ndarray, days_since_last_purchase: np.ndarray | None, gates: GateSettings
) -> Gate:
    """ROC-AUC and PR-AUC above those of days since the last purchase alone, on the same test rows, by at least
    ``gates.min_gain_over_recency``. That one column is what a churn model most often relearns, and needs no
    model at all: a candidate that cannot beat it is not worth serving, first model or not. Passes, saying so,
    when the feature service has no such column."""
    if days_since_last_purchase is None:
        return Gate("beats_recency", True, "not measured: the features have no days_since_last_purchase", {})
    cand, recency = ranking_metrics(y, candidate), ranking_metrics(y, days_since_last_purchase)
    pr_gain, roc_gain = cand["pr_auc"] - recency["pr_auc"], cand["roc_auc"] - recency["roc_auc"]
    bar = gates.min_gain_over_recency
    passed = pr_gain >= bar and roc_gain >= bar
    reason = (
        f"PR-AUC {cand['pr_auc']:.3f} vs recency alone {recency['pr_auc']:.3f} (gain {pr_gain:+.3f}), ROC-AUC "
        f"{cand['roc_auc']:.3f} vs {recency['roc_auc']:.3f} (gain {roc_gain:+.3f}); each needs >= {bar:+.3f}"
    )
    return Gate("beats_recency", passed, reason, paired_aucs(cand, recency, "recency"))


def paired_aucs(candidate: dict, other: dict, other_name: str) -> dict[str, float]:
    """The two AUCs of the candidate and of what it is compared with, as a gate's values."""
    return {
        "candidate_pr_auc": candidate["pr_auc"],
        f"{other_name}_pr_auc": other["pr_auc"],
        "candidate_roc_auc": candidate["roc_auc"],
        f"{other_name}_roc_auc": other["roc_auc"],
    }


def calibration_gate(y: np.ndarray, candidate: np.ndarray, gates: GateSettings) -> Gate:
    brier = float(np.mean((candidate - y) ** 2))
    return Gate(
        "calibration", brier <= gates.max_brier, f"Brier {brier:.3f} (bound {gates.max_brier:.3f})", {"brier": brier}
    )


def fairness_gate(y: np.ndarray, predicted: np.ndarray, groups: pd.Series, gates: GateSettings) -> Gate:
    """Gaps in recall and in positive-prediction rate between groups with enough rows."""
    frame = pd.DataFrame({"y": y, "p": predicted, "g": groups.fillna("unknown").to_numpy()})
    per_group = {}
    for group, rows in frame.groupby("g"):
        positives = rows[rows["y"] == 1]
        per_group[str(group)] = {
            "rows": len(rows),
            "recall": float(positives["p"].mean()) if len(positives) else float("nan"),
            "positive_rate": float(rows["p"].mean()),
        }
    gated = {g: v for g, v in per_group.items() if v["rows"] >= gates.min_group_rows}
    recalls = [v["recall"] for v in gated.values() if np.isfinite(v["recall"])]
    rates = [v["positive_rate"] for v in gated.values()]
    recall_gap = max(recalls) - min(recalls) if len(recalls) > 1 else 0.0
    rate_gap = max(rates) - min(rates) if len(rates) > 1 else 0.0
    passed = recall_gap <= gates.max_recall_gap and rate_gap <= gates.max_positive_rate_gap
    reason = (
        f"by {gates.fairness_group}: recall gap {recall_gap:.3f} (bound {gates.max_recall_gap:.3f}), "
        f"positive-rate gap {rate_gap:.3f} (bound {gates.max_positive_rate_gap:.3f}) over {len(gated)} groups"
    )
    return Gate("fairness", passed, reason, {"recall_gap": recall_gap, "positive_rate_gap": rate_gap, **per_group})


def evaluate_gates(
    y: np.ndarray,
    candidate: np.ndarray,
    threshold: float,
    champion: np.ndarray | None,
    groups: pd.Series,
    gates: GateSettings,
    *,
    days_since_last_purchase: np.ndarray | None,
) -> GateReport:
    return GateReport(
        [
            beats_champion_gate(y, candidate, champion, gates),
            beats_recency_gate(y, candidate, days_since_last_purchase, gates),
            calibration_gate(y, candidate, gates),
            fairness_gate(y, (candidate >= threshold).astype(int), groups, gates),
        ]
    )


def permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    features: list[str],
    seed: int,
    repeats: int = 3,
    max_rows: int = 20_000,
) -> pd.DataFrame:
    """How much PR-AUC drops when one feature's values are shuffled across rows, per feature.

    The shuffle keeps the feature's distribution but breaks its tie to the label and to the other features,
    so the drop is what the model draws from it (on held-out rows: what generalizes). Any model that scores
    a matrix is measured the same way. At most ``max_rows`` rows (a seeded sample) keep it to seconds.
    Columns: feature, importance (mean drop over ``repeats`` shuffles), std; largest first.
    """
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    if len(x) > max_rows:
        keep = rng.choice(len(x), max_rows, replace=False)
        x, y = x[keep], y[keep]
    if len(np.unique(y)) < 2:  # no PR-AUC to lose (as in classification_metrics): NaN, not a failed asset
        return pd.DataFrame({"feature": features, "importance": np.nan, "std": np.nan})
    baseline = average_precision_score(y, predict(x))
    drops = np.empty((len(features), repeats))
    for column in range(len(features)):
        shuffled = x.copy()
        for repeat in range(repeats):
            shuffled[:, column] = rng.permutation(x[:, column])
            drops[column, repeat] = baseline - average_precision_score(y, predict(shuffled))
    frame = pd.DataFrame({"feature": features, "importance": drops.mean(axis=1), "std": drops.std(axis=1)})
    return frame.sort_values("importance", ascending=False, ignore_index=True)
