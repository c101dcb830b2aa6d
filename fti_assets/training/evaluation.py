"""Promotion policy: which candidate may become the champion, and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def promotion_decision(candidate: dict[str, float], champion: dict[str, float] | None) -> PromotionDecision:
    """First model: it must beat a trivial baseline (PR-AUC above the positive rate, ROC-AUC above 0.5)
    on the test period. Later models: at least the champion's PR-AUC on the test period."""
    pr_auc, roc_auc = candidate["test_pr_auc"], candidate["test_roc_auc"]
    if champion is None:
        prevalence = candidate["test_positive_rate"]
        if pr_auc > prevalence and roc_auc > 0.5:
            return PromotionDecision(True, f"first model; test PR-AUC {pr_auc:.3f} > positive rate {prevalence:.3f}")
        return PromotionDecision(
            False,
            f"does not beat a trivial model: PR-AUC {pr_auc:.3f} vs {prevalence:.3f}, ROC-AUC {roc_auc:.3f}",
        )
    best = champion["test_pr_auc"]
    if pr_auc >= best:
        return PromotionDecision(True, f"test PR-AUC {pr_auc:.3f} >= champion's {best:.3f}")
    return PromotionDecision(False, f"test PR-AUC {pr_auc:.3f} < champion's {best:.3f}")
