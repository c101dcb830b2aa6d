"""The drift gate: may the features of a day flow into predictions of the current champion?

One verdict per (day, champion version), kept in a ledger on disk, so that the check in the run
that computed the features, a later sensor or automation run, a backfill and a click in the UI
all see the same answer (a blocking check alone gates only its own run, dagster#17332).
"""

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd
from dagster import AssetObservation, MetadataValue

from fti_assets.monitoring.drift import DriftSettings, SortedReference, evaluate_drift, write_drift_report
from fti_assets.partitions import DayCheck
from fti_assets.recovery import temp_prefix
from fti_assets.settings import ProjectSettings

DRIFT_CHECK = "feature_drift"
# Evidently HTML reports written per run, most drifted days first: each takes seconds.
MAX_REPORTS_PER_RUN = 14
FEATURE_TABLE = "customer_features"
PREDICTIONS = "churn_predictions"
IN_TRAINING_PERIOD = "in_training_period"
NO_REFERENCE = "no_reference"
NO_FEATURES = "no_features"
PASSED = "passed"
DRIFTED = "drifted"


@dataclass(frozen=True)
class Reference:
    """What the champion was trained and evaluated on: the feature rows of its validation and test periods."""

    model_version: str
    dataset_version: str
    last_training_day: str
    features: pd.DataFrame = field(repr=False)
    # The same rows, each column sorted once for every day judged against them.
    sorted: SortedReference = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sorted", SortedReference(self.features))


@dataclass(frozen=True)
class DayVerdict:
    day: str
    status: str
    model_version: str | None
    evaluated_at: str
    drift: dict | None = None
    report: str | None = None

    @property
    def held_back(self) -> bool:
        return self.status == DRIFTED

    def describe(self) -> str:
        if self.status == DRIFTED:
            return f"{self.day}: drifted against champion v{self.model_version} ({self.drift['summary']})"
        return f"{self.day}: {self.status.replace('_', ' ')}"


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


def report_url(settings: ProjectSettings, report: str) -> str:
    """Where a report under data/reports/ opens in a browser: `make ui` serves that folder on loopback."""
    base = os.environ.get("FTI_REPORTS_URL", "http://127.0.0.1:3001").rstrip("/")
    return f"{base}/{Path(report).relative_to(settings.path('reports')).as_posix()}"


def drift_settings(settings: ProjectSettings) -> DriftSettings:
    m = settings.monitoring
    return DriftSettings(
        method=m.drift_method,
        column_threshold=m.drift_column_threshold,
        drifted_share_threshold=m.drifted_share_threshold,
    )


@lru_cache(maxsize=4)
def _dataset_reference(path: str, model_version: str, dataset_version: str) -> Reference:
    # Only the validation and test rows: the train split is most of the file and not the reference.
    recent = pd.read_parquet(path, filters=[("split", "in", ["validation", "test"])])
    return Reference(model_version, dataset_version, str(recent["as_of_day"].max()), recent.reset_index(drop=True))


class DriftGate:
    """Verdicts of feature days against the reference of whichever model is the champion now."""

    def __init__(self, settings: ProjectSettings, champion) -> None:
        self.settings = settings
        self.champion = champion  # an MLflow ModelVersion, or None before the first promotion

    @property
    def model_version(self) -> str | None:
        return str(self.champion.version) if self.champion is not None else None

    def reference(self) -> Reference | None:
        if self.champion is None:
            return None
        version = self.champion.tags["training_dataset_version"]
        path = self.settings.path("datasets", "training", f"{version}.parquet")
        return _dataset_reference(str(path), self.model_version, version)

    def ledger_path(self, day: str) -> Path:
        return self.settings.path("monitoring", "feature_drift", f"v{self.model_version}", f"{day}.json")

    def verdict(self, day: str, features: pd.DataFrame | None = None, refresh: bool = False) -> DayVerdict:
        """The recorded verdict for ``day``, evaluated now (and recorded) if there is none yet."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        reference = self.reference()
        if reference is None:
            return DayVerdict(day, NO_REFERENCE, None, now)
        if day <= reference.last_training_day:
            # The model learnt from this day: the day is part of its reference, not drift from it.
            return DayVerdict(day, IN_TRAINING_PERIOD, self.model_version, now)
        path = self.ledger_path(day)
        if path.exists() and not refresh:
            return DayVerdict(**json.loads(path.read_text()))
        if features is None:
            feature_file = self.settings.path("lake", "customer_features", f"{day}.parquet")
            if not feature_file.exists():
                return DayVerdict(day, NO_FEATURES, self.model_version, now)
            features = pd.read_parquet(feature_file)
        if features.empty:  # a day nobody was active: nothing to compare, and nothing to score
            return DayVerdict(day, NO_FEATURES, self.model_version, now)
        result = evaluate_drift(
            reference.sorted, features, self.monitored_columns(reference), drift_settings(self.settings)
        )
        drift = {**result.as_metadata(), "summary": result.summary()}
        verdict = DayVerdict(day, DRIFTED if result.drifted else PASSED, self.model_version, now, drift)
        write_json_atomic(path, asdict(verdict))
        return verdict

    def split(self, days: list[str]) -> tuple[list[str], list[DayVerdict]]:
        """The days the gate lets through, and the verdicts of the days it holds back."""
        verdicts = [self.verdict(day) for day in days]
        return [v.day for v in verdicts if not v.held_back], [v for v in verdicts if v.held_back]

    def write_report(self, verdict: DayVerdict) -> DayVerdict:
        """The Evidently HTML report of a judged day (seconds each, so only for the days a person will open)."""
        reference = self.reference()
        features = pd.read_parquet(self.settings.path("lake", "customer_features", f"{verdict.day}.parquet"))
        report = self.settings.path("reports", "feature_drift", f"{verdict.day}_v{self.model_version}.html")
        write_drift_report(
            reference.features,
            features,
            self.monitored_columns(reference),
            drift_settings(self.settings),
            report,
            title=f"Feature drift of {verdict.day} against champion v{self.model_version}",
        )
        reported = replace(verdict, report=str(report))
        write_json_atomic(self.ledger_path(verdict.day), asdict(reported))
        return reported

    def report_most_drifted(self, verdicts: list[DayVerdict]) -> dict[str, DayVerdict]:
        """The drifted verdicts by day, the most drifted ``MAX_REPORTS_PER_RUN`` with their report written."""
        drifted = sorted((v for v in verdicts if v.held_back), key=lambda v: -v.drift["drifted_share"])
        return {
            v.day: self.write_report(v) if rank < MAX_REPORTS_PER_RUN and not v.report else v
            for rank, v in enumerate(drifted)
        }

    def monitored_columns(self, reference: Reference) -> list[str]:
        excluded = set(self.settings.monitoring.drift_exclude_columns)
        meta = {"customer_id", "event_timestamp", "as_of_day", "split", "churned"}
        return [c for c in reference.features.columns if c not in meta and c not in excluded]

    def recorded_verdicts(self) -> list[DayVerdict]:
        """Every verdict recorded against the current champion."""
        if self.champion is None:
            return []
        folder = self.settings.path("monitoring", "feature_drift", f"v{self.model_version}")
        return [DayVerdict(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def in_training_period(model_version: str) -> DayCheck:
    """A day the champion learnt from is its reference, not drift from it."""
    return DayCheck(
        passed=True,
        metadata={"champion_version": model_version},
        description=f"in the training period of champion v{model_version}: its reference, not drift",
    )


def drift_day_check(settings: ProjectSettings, verdict: DayVerdict) -> DayCheck | None:
    """The drift check's result for one day; None when nothing was compared (no champion, no features)."""
    champion = {"champion_version": verdict.model_version or "none"}
    if verdict.status == IN_TRAINING_PERIOD:
        return in_training_period(verdict.model_version)
    if verdict.status not in (PASSED, DRIFTED):
        return None
    drift = verdict.drift
    metadata = {
        **champion,
        "drifted_share": float(drift["drifted_share"]),
        "drifted_columns": MetadataValue.json(drift["drifted_columns"]),
        "columns": MetadataValue.json(drift["columns"]),
        "method": settings.monitoring.drift_method,
        "current_rows": int(drift["current_rows"]),
        "reference_rows": int(drift["reference_rows"]),
    }
    if verdict.report:
        metadata["report"] = MetadataValue.url(report_url(settings, verdict.report))
    return DayCheck(passed=verdict.status == PASSED, metadata=metadata, description=drift["summary"])


class HeldBack:
    """Prediction days the drift gate held back, until a release or an override materializes them."""

    def __init__(self, settings: ProjectSettings) -> None:
        self.folder = settings.path("monitoring", "held_back")

    def hold(self, verdict: DayVerdict) -> None:
        write_json_atomic(self.folder / f"{verdict.day}.json", asdict(verdict))

    @staticmethod
    def observation(settings: ProjectSettings, verdict: DayVerdict) -> AssetObservation:
        """What the held-back prediction day's page in the UI shows: why, against which champion, the report."""
        return AssetObservation(
            asset_key=PREDICTIONS,
            partition=verdict.day,
            description=f"Held back by the drift gate: {verdict.describe()}",
            metadata={
                "held_back": True,
                "reason": verdict.describe(),
                "champion_version": verdict.model_version or "none",
                "drifted_share": float(verdict.drift["drifted_share"]) if verdict.drift else 0.0,
                "release": "scored when a new champion passes the day, or run with override_drift_gate",
                **({"report": MetadataValue.url(report_url(settings, verdict.report))} if verdict.report else {}),
            },
        )

    def release(self, day: str) -> None:
        (self.folder / f"{day}.json").unlink(missing_ok=True)

    def days(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json"))
