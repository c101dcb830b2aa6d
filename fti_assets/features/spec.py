"""Customer features defined by configuration: windows, aggregates, inter-purchase gaps and trends.

A ``FeatureSpec`` names the features of one feature view; ``features.transform.compute_customer_features``
computes them. ``V1`` is the spec of the feature service ``customer_churn_v1`` (spend sum/mean and transaction
count over 7/30/90 days, recency, tenure), fixed in code: models trained on it keep their inputs.

Windows are days up to and including the as-of day, or ``all``: the customer's whole history in the
transactions given (``history_start`` says which days to read).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Window = int | Literal["all"]
Aggregate = Literal["sum", "mean", "count", "max", "days"]
# Column name of an aggregate over a window: {prefix}_{7d|all}. "count" counts transactions (a line-item log
# counts every item); "days" counts distinct purchase days, what a customer-lifetime model counts.
PREFIX = {"sum": "spend_sum", "mean": "spend_mean", "count": "txn_count", "max": "spend_max", "days": "purchase_days"}
INTEGER_AGGREGATES = ("count", "days")


class FeatureSpec(BaseModel):
    """Which features a feature view holds. Changing it is a new view and service version, never an edit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: list[Window] = Field(
        default=[7, 30, 90, "all"], min_length=1, description="Days up to the as-of day, or 'all' (whole history)."
    )
    aggregates: list[Aggregate] = Field(
        default=["sum", "mean", "count", "max", "days"],
        description="Per window: spend sum, mean and max per transaction, transactions, distinct purchase days.",
    )
    gaps: bool = Field(
        default=True,
        description=(
            "Whole-history purchase rhythm: days since the first purchase, the mean gap between purchase days, the "
            "last gap (gaps 0 before a second purchase day), and the purchase days the customer's own rate "
            "expects in the current silence (rate x days since the last purchase)."
        ),
    )
    trends: list[tuple[int, Window]] = Field(
        default=[(30, "all")],
        description=(
            "(short, long): purchase days per day over the short window divided by the same over the long one "
            "(the part of it since the first purchase); above 1, buying more often lately. 0 without purchases."
        ),
    )

    @model_validator(mode="after")
    def _valid(self) -> FeatureSpec:
        days = [w for w in self.windows if w != "all"]
        if any(w < 1 for w in days) or len(set(self.windows)) != len(self.windows):
            raise ValueError(f"windows must be distinct positive day counts or 'all', got {self.windows}")
        for short, long in self.trends:
            if short < 1 or (long != "all" and long <= short):
                raise ValueError(f"a trend compares a short window with a longer one, got ({short}, {long})")
        return self

    @property
    def columns(self) -> list[str]:
        """The feature columns, in the order the feature view lists them."""
        names = [f"{PREFIX[a]}_{suffix(w)}" for a in self.aggregates for w in self.windows]
        names += ["days_since_last_purchase", "tenure_days"]
        if self.gaps:
            names += [
                "days_since_first_purchase",
                "purchase_gap_mean_days",
                "purchase_gap_last_days",
                "expected_purchases_missed",
            ]
        return names + [f"purchase_trend_{short}d_{suffix(long)}" for short, long in self.trends]

    @property
    def integer_columns(self) -> list[str]:
        """Columns of whole numbers (Int64 in the feature view); the rest are Float64."""
        names = [f"{PREFIX[a]}_{suffix(w)}" for a in self.aggregates if a in INTEGER_AGGREGATES for w in self.windows]
        gaps = ["days_since_first_purchase", "purchase_gap_last_days"] if self.gaps else []
        return [*names, "days_since_last_purchase", "tenure_days", *gaps]

    @property
    def finite_days(self) -> int:
        """The longest window in days (0 with only 'all')."""
        return max([w for w in self._windows_read() if w != "all"], default=0)

    @property
    def whole_history(self) -> bool:
        return "all" in self._windows_read() or self.gaps

    def _windows_read(self) -> list[Window]:
        return [*self.windows, *(w for pair in self.trends for w in pair)]


V1 = FeatureSpec(windows=[7, 30, 90], aggregates=["sum", "mean", "count"], gaps=False, trends=[])


class ServiceSpec(BaseModel):
    """A versioned Feast feature service: the one feature view it reads, and the features that view holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view: str = Field(description="Name of the feature view; a new version gets a new name, never an edit.")
    features: FeatureSpec = FeatureSpec()


V1_SERVICE = "customer_churn_v1"
# Fixed in code: models trained on v1 read exactly these columns, whatever the settings declare beside it.
BUILT_IN_SERVICES = {V1_SERVICE: ServiceSpec(view="customer_activity_v1", features=V1)}
# Declared in settings (these are the defaults): whole history, largest purchase, purchase days, rhythm, trend.
DEFAULT_SERVICES = {"customer_churn_v2": ServiceSpec(view="customer_activity_v2", features=FeatureSpec())}


def merged(specs: list[FeatureSpec]) -> FeatureSpec:
    """One spec whose columns include every given spec's: the feature table that all their views read."""
    return FeatureSpec(
        windows=list(dict.fromkeys(w for spec in specs for w in spec.windows)),
        aggregates=list(dict.fromkeys(a for spec in specs for a in spec.aggregates)),
        gaps=any(spec.gaps for spec in specs),
        trends=list(dict.fromkeys(t for spec in specs for t in spec.trends)),
    )


def as_config(services: dict[str, ServiceSpec]) -> dict[str, dict]:
    """Services by name as plain values: resource config, and part of the definitions' version."""
    return {name: service.model_dump(mode="json") for name, service in services.items()}


def suffix(window: Window) -> str:
    return "all" if window == "all" else f"{window}d"


def history_start(first: date, active_window_days: int, spec: FeatureSpec, data_start: date) -> date:
    """The first raw day the features of day ``first`` read: ``data_start`` for whole-history features."""
    if spec.whole_history:
        return data_start
    return first - timedelta(days=max(active_window_days, spec.finite_days) - 1)
