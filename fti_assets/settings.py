"""Project settings: where the data comes from and the time frame of the use case.

One YAML file (``FTI_CONFIG``, default: the embedded simulator settings) says which source to read,
how its columns map to the standard schema, its time zone, the date range and the label horizon.
Pointing the project at other data is a new file, never a code change. URLs that may carry
credentials can be left out of the file and given as environment variables instead
(``FTI_SOURCE_URL``, ``FTI_PREDICTIONS_URL``, ``FTI_MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from dagster import Config
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fti_assets.features.spec import BUILT_IN_SERVICES, DEFAULT_SERVICES, FeatureSpec, ServiceSpec, merged

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "simulated.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Longest customer or transaction id accepted; longer ones are quarantined. The predictions table stores
# customer ids in a column of this width (String(64) on a real database rejects longer ones).
MAX_ID_LENGTH = 64
DUPLICATE_RULES = ("same_id", "same_id_and_content")
TIMESTAMP_FORMS = ("ISO8601", "dayfirst", "monthfirst")


class TransactionColumns(Config):
    """Source column names for the standard transaction schema, and how to read their values."""

    transaction_id: list[str] = Field(
        description=(
            "Column (or columns, joined) that identify one transaction. [] when the source has no id: each row "
            "gets one derived from its content (customer, time, amount, country) and its occurrence among "
            "identical rows, so repeated identical purchases stay distinct and a re-read gives the same ids."
        )
    )
    duplicates: str = Field(
        default="same_id",
        description=(
            "same_id: a row whose id was read before is a duplicate (quarantined). same_id_and_content: for "
            "line-item logs whose id can repeat (Invoice + StockCode): only a row equal to an earlier one in id, "
            "customer, time and amount is a duplicate; other rows of the same id are separate purchases, their "
            "ids suffixed #1, #2, ... in time and amount order."
        ),
    )
    customer_id: str
    timestamp: str
    timestamp_format: str | None = Field(
        default=None,
        description=(
            "How text times are written. Unset: ISO 8601 (numeric dates such as 02/01/1997, whose day and month "
            "can swap, stop the run with an error instead of a guess). 'ISO8601': ISO only, anything else is "
            "quarantined. 'dayfirst' / 'monthfirst': numeric dates in that order (ISO values still read as ISO). "
            "Or a strftime format such as '%d/%m/%Y %H:%M'."
        ),
    )
    amount: str = Field(
        description="A column name, or a pandas expression over source columns such as 'Quantity * Price'."
    )
    accept_zero_amount: bool = Field(
        default=False, description="Keep purchases of amount 0 (free items, promotions); else quarantined."
    )
    max_amount: float = Field(
        default=1_000_000.0,
        gt=0,
        description="Larger amounts are quarantined (amount_too_large): a unit or parsing error, not a purchase.",
    )
    country: str | None = Field(
        default=None, description="Optional; used to derive customers when the source has no customer table."
    )

    @field_validator("transaction_id", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("duplicates")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if value not in DUPLICATE_RULES:
            raise ValueError(f"duplicates must be one of {list(DUPLICATE_RULES)}, got {value!r}")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _known_form(cls, value: str | None) -> str | None:
        if value is not None and value not in TIMESTAMP_FORMS and "%" not in value:
            raise ValueError(
                f"timestamp_format must be one of {list(TIMESTAMP_FORMS)} or a strftime format such as "
                f"'%d/%m/%Y %H:%M', got {value!r}"
            )
        return value


class CustomerColumns(Config):
    """Source column names of an optional customer table."""

    table: str
    customer_id: str
    country: str | None = None
    segment: str | None = None
    signup_date: str | None = None


class SourceSettings(_Strict):
    url: str | None = Field(default=None, description="SQLAlchemy URL of the source database.")
    path: str | None = Field(default=None, description="A CSV or parquet file instead of a database.")
    transactions_table: str = "transactions"
    columns: TransactionColumns
    customers: CustomerColumns | None = None
    timezone: str = Field(default="UTC", description="Time zone of naive source timestamps and of day partitions.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises ZoneInfoNotFoundError with the bad name
        return value

    @model_validator(mode="after")
    def _one_location(self) -> SourceSettings:
        if not self.url and not self.path and not os.environ.get("FTI_SOURCE_URL"):
            raise ValueError("source: set 'url' (SQLAlchemy URL), 'path' (CSV/parquet file) or FTI_SOURCE_URL")
        return self


class SplitSettings(_Strict):
    """Time-based split of the labelled as-of days: the last days test, the days before them validation."""

    validation_days: int = Field(default=20, ge=1)
    test_days: int = Field(default=20, ge=1)
    train_stride_days: int = Field(
        default=7,
        ge=1,
        description=(
            "Each customer gives a training example every N as-of days (staggered by customer, so every day "
            "is represented): consecutive days of one customer differ by a day's shift, so the train split "
            "shrinks N-fold for little information lost. Validation and test keep every row. 1 keeps all."
        ),
    )


class DriftInjection(_Strict):
    """Drift the simulator injects from day index `from_day` on (see `fti_assets.simulate.DriftSpec`)."""

    from_day: int = Field(ge=0)
    spend_multiplier: float = 1.0
    frequency_multiplier: float = 1.0
    churn_multiplier: float = 1.0


class SimulatorSettings(_Strict):
    """Arguments of `fti_assets.simulate.simulate` for the embedded source."""

    n_customers: int = Field(default=5000, ge=1)
    days: int = Field(default=180, ge=1)
    start: date = date(2026, 1, 1)
    seed: int = 42
    purchase_rate_multiplier: float = Field(
        default=1.0, gt=0, description="Scales every customer's purchase rate: below 1, a sparse purchase log."
    )
    drift: DriftInjection | None = None
    available_days: int | None = Field(
        default=None, description="Write only the first N days to the source; the rest arrives later (demo-drift)."
    )


class MonitoringSettings(_Strict):
    """Drift and data-quality checks, and when drift asks for retraining."""

    drift_method: Literal["wasserstein", "psi", "ks"] = Field(
        default="wasserstein", description="Pinned per-column test, so a score means the same at every size."
    )
    drift_column_threshold: float = Field(default=0.1, gt=0)
    drifted_share_threshold: float = Field(default=0.3, gt=0, le=1)
    # Tenure grows by a day every day for everyone: drift by construction, so not monitored by default.
    drift_exclude_columns: list[str] = ["tenure_days"]
    retrain_cooldown_hours: float = Field(default=24.0, ge=0)
    min_labelled_drifted_days: int = Field(
        default=7, ge=1, description="Retrain once this many drifted days have labels, so the drift is learnt."
    )
    row_count_ratio_bounds: tuple[float, float] = Field(
        default=(0.2, 5.0), description="A day's rows against the median of the same weekday in the 4 weeks before."
    )
    row_count_min_median: int = Field(
        default=30, ge=0, description="Days before a median this small are too sparse for the row-count rule."
    )


class GateSettings(_Strict):
    """Blocking checks a candidate must pass before it becomes the champion."""

    min_pr_auc_gain: float = Field(default=0.0, description="Candidate PR-AUC minus champion's, same test rows.")
    max_roc_auc_drop: float = Field(default=0.02, ge=0)
    min_gain_over_recency: float = Field(
        default=0.0,
        description="Candidate ROC-AUC and PR-AUC minus those of days since the last purchase alone, same test rows.",
    )
    max_brier: float = Field(default=0.25, gt=0)
    fairness_group: str = Field(
        default="country", description="Customer attribute whose groups must be treated alike (not a business segment)."
    )
    max_recall_gap: float = Field(default=0.2, ge=0)
    max_positive_rate_gap: float = Field(default=0.2, ge=0)
    min_group_rows: int = Field(
        default=500, ge=1, description="Smaller groups are reported, not gated: their rates are mostly noise."
    )


class ProjectSettings(_Strict):
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Everything the project writes.")
    source: SourceSettings
    start_date: date = Field(description="First day partition.")
    end_date: date = Field(description="Last day partition (inclusive).")
    label_horizon_days: int = Field(default=30, ge=1, description="Churned on D = no purchase in (D, D+h].")
    active_window_days: int = Field(
        default=90,
        ge=1,
        description="A customer is in the population on D after a purchase in the last N days.",
    )
    range_chunk_days: int = Field(
        default=30,
        ge=1,
        description="Days a range run computes and writes at a time: bounds its memory; a progress line each.",
    )
    range_chunk_rows: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "Rows batch inference scores and writes at a time (in whole days, at most range_chunk_days): its "
            "memory follows this, not the number of customers."
        ),
    )
    split: SplitSettings = SplitSettings()
    feature_services: dict[str, ServiceSpec] = Field(
        default=DEFAULT_SERVICES,
        description=(
            "Feature services declared beside the built-in customer_churn_v1, by name: each a feature view and its "
            "features (windows, aggregates, gaps, trends). All views read one feature table."
        ),
    )
    feature_service: str = Field(default="customer_churn_v2", description="The service new models train on.")
    model_name: str = "customer_churn"
    simulator: SimulatorSettings | None = Field(default=None, description="Fill the source with the simulator.")
    monitoring: MonitoringSettings = MonitoringSettings()
    gates: GateSettings = GateSettings()

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ProjectSettings:
        if self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @model_validator(mode="after")
    def _services_are_new_versions(self) -> ProjectSettings:
        for name in set(self.feature_services) & set(BUILT_IN_SERVICES):
            if self.feature_services[name] != BUILT_IN_SERVICES[name]:
                raise ValueError(f"{name} is fixed (models trained on it read it): declare a new version beside it")
        views = [service.view for service in self.all_feature_services.values()]
        if len(set(views)) != len(views):
            raise ValueError(f"each feature service needs a feature view of its own, got {views}")
        if self.feature_service not in self.all_feature_services:
            raise ValueError(
                f"feature_service {self.feature_service!r} is not among {sorted(self.all_feature_services)}"
            )
        return self

    @property
    def all_feature_services(self) -> dict[str, ServiceSpec]:
        """The built-in services and the declared ones, by name."""
        return {**BUILT_IN_SERVICES, **self.feature_services}

    @property
    def feature_table_spec(self) -> FeatureSpec:
        """The columns of the one feature table that every service's view reads."""
        return merged([service.features for service in self.all_feature_services.values()])

    @property
    def end_exclusive(self) -> date:
        return self.end_date + timedelta(days=1)

    @property
    def source_url(self) -> str | None:
        return os.environ.get("FTI_SOURCE_URL") or self.source.url

    def path(self, *parts: str) -> Path:
        return Path(self.data_dir, *parts)


def _expand(value: object) -> object:
    """Expand ${VARS} and ~ in every string value of the file."""
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str):
        return os.path.expanduser(os.path.expandvars(value))
    return value


def load_settings(path: str | os.PathLike | None = None, **overrides: object) -> ProjectSettings:
    """Read settings from ``path`` (or ``FTI_CONFIG``, or the embedded default); ``overrides`` win."""
    config_path = Path(path or os.environ.get("FTI_CONFIG") or DEFAULT_CONFIG).resolve()
    if not config_path.exists():
        raise FileNotFoundError(f"settings file not found: {config_path} (set FTI_CONFIG to a YAML file)")
    raw = yaml.safe_load(config_path.read_text()) or {}
    raw = _expand(raw)
    if os.environ.get("FTI_DATA_DIR"):
        raw["data_dir"] = os.environ["FTI_DATA_DIR"]
    raw.update(overrides)
    # Relative paths in the file are relative to the project root, wherever the command runs.
    data_dir = Path(raw.get("data_dir", PROJECT_ROOT / "data"))
    raw["data_dir"] = data_dir if data_dir.is_absolute() else PROJECT_ROOT / data_dir
    source = dict(raw.get("source", {}))
    if source.get("path") and not Path(source["path"]).is_absolute():
        source["path"] = str(PROJECT_ROOT / source["path"])
    if not source.get("url") and not source.get("path") and raw.get("simulator") is not None:
        source["url"] = f"sqlite:///{raw['data_dir']}/source.db"
    raw["source"] = source
    return ProjectSettings.model_validate(raw)
