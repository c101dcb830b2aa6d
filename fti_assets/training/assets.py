"""Training pipeline: labels, point-in-time training datasets, candidate models, the champion alias."""

import json
import os
import subprocess
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
)
from pydantic import Field

from fti_assets import tags as run_tags
from fti_assets.features.transform import lookback_start
from fti_assets.metadata import column_schema, table_metadata
from fti_assets.partitions import DaySlices, Progress, chunks, daily_partitions, run_days
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource, days, write_parquet_atomic
from fti_assets.resources.mlflow import VALIDATION_SCORES, ModelRegistryResource
from fti_assets.settings import PROJECT_ROOT, ProjectSettings
from fti_assets.training.dataset import assign_split, split_by_time
from fti_assets.training.evaluation import evaluate_gates
from fti_assets.training.labels import compute_churn_labels, label_days
from fti_assets.training.models import (
    TrainedModel,
    best_f1_threshold,
    classification_metrics,
    train_mlp,
    train_sklearn_baseline,
)
from fti_assets.versioning import frame_version

OWNERS = ["team:ml"]

GATE_CHECKS = {
    "beats_champion": "PR-AUC beats the champion's on the same test rows by the margin; ROC-AUC within tolerance.",
    "calibration": "Brier score of the candidate on its test period within the bound.",
    "fairness": "Recall and positive-prediction-rate gaps between customer groups within the bounds.",
}
LABELS = "churn_labels"
MODEL_CODE_VERSION = "1"
# Kubernetes GPU limit for the PyTorch step; applied per step under the k8s_job_executor (deploy/).
GPU_OP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def git_commit() -> str:
    if os.environ.get("FTI_GIT_COMMIT"):
        return os.environ["FTI_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class SklearnConfig(Config):
    c: float = Field(default=1.0, description="Inverse regularization strength of the logistic regression.")
    seed: int = 7


class MlpConfig(Config):
    hidden: list[int] = Field(default=[64, 32], description="Hidden layer widths.")
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 2e-3
    seed: int = 7


def build_training_assets(settings: ProjectSettings) -> list:
    lookback_days = (settings.start_date - lookback_start(settings.start_date, settings.active_window_days)).days
    horizon = settings.label_horizon_days

    @asset(
        name=LABELS,
        group_name="training",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        deps=[
            AssetDep(
                "raw_transactions",
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=-lookback_days,
                    end_offset=horizon,
                    allow_nonexistent_upstream_partitions=True,
                ),
            )
        ],
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            f"churned = 1 when a customer active on day D buys nothing in (D, D+{horizon} days]. Reads raw days "
            "after D, so a day whose horizon is not complete yet gets no labels (and is labelled once it is)."
        ),
    )
    def churn_labels(context: AssetExecutionContext, lake: LakeResource):
        first, end = run_days(context)
        written = [d for d in lake.written_days("raw_transactions") if d <= settings.end_date]
        last_complete = written[-1] if written else None
        first, labelled_end = label_days(first, end, horizon, last_complete)
        transactions = lake.read_days(
            "raw_transactions",
            lookback_start(first, settings.active_window_days),
            labelled_end + timedelta(days=horizon),
            columns=["customer_id", "day", "amount"],
        )
        labels = compute_churn_labels(
            transactions, first, labelled_end, settings.active_window_days, horizon, settings.source.timezone
        )
        label_slices = DaySlices.of(labels, "as_of_day")
        labelled = {d.isoformat() for d in days(first, labelled_end)}
        for key in sorted(labelled):
            lake.write_day(LABELS, date.fromisoformat(key), label_slices.rows(key))
        unlabelled = (end - labelled_end).days
        context.log.info(
            f"{len(labels)} labels for {(labelled_end - first).days} days; {unlabelled} days wait for their horizon"
        )
        positive_rate = labels.groupby("as_of_day")["churned"].mean().round(4).to_dict()
        label_slices.report(
            context,
            context.partition_keys,
            {
                key: {"labelled": True, "positive_rate": positive_rate.get(key, 0.0)}
                if key in labelled
                else {
                    "labelled": False,
                    "waiting_for_horizon_until": (date.fromisoformat(key) + timedelta(days=horizon)).isoformat(),
                }
                for key in context.partition_keys
            },
        )
        return MaterializeResult(
            metadata={
                "dagster/column_schema": column_schema(labels),
                "run_days": f"{first} .. {end}",
                "horizon_days": horizon,
            }
        )

    @asset(
        name="training_dataset",
        group_name="training",
        deps=[AssetDep(LABELS), AssetDep("customer_features"), "feature_definitions"],
        kinds={"feast", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            f"Labels joined point-in-time to the features of the `{settings.feature_service}` FeatureService "
            "(Feast get_historical_features), split by time into train / validation / test. Written once per "
            "content hash under datasets/training/ and never overwritten."
        ),
    )
    def training_dataset(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
        labels = lake.read_days(LABELS, settings.start_date, settings.end_exclusive)
        if labels.empty:
            raise ValueError("no labelled day yet: materialize churn_labels for days whose horizon is complete")
        store = feast.store()
        service = store.get_feature_service(settings.feature_service)
        entity_df = labels[["customer_id", "event_timestamp", "as_of_day", "churned"]]
        label_days = DaySlices.of(entity_df, "as_of_day")
        progress = Progress(context, len(label_days.bounds))
        parts = []
        # A chunk of days at a time: each row's point-in-time join is its own, so the result is the same,
        # and the join's working memory follows the chunk.
        for chunk in chunks(sorted(label_days.bounds), settings.range_chunk_days):
            start, end = label_days.bounds[chunk[0]][0], label_days.bounds[chunk[-1]][1]
            part = store.get_historical_features(entity_df=entity_df.iloc[start:end], features=service).to_df()
            # Feast keeps no row order: sort, so the same inputs give the same bytes and the same version.
            parts.append(part.sort_values(["as_of_day", "customer_id"]))
            progress.add(len(chunk), len(part))
        joined = pd.concat(parts, ignore_index=True)
        del parts
        feature_columns = feast.feature_columns(settings.feature_service)
        joined["customer_id"] = joined["customer_id"].astype("string")
        periods = split_by_time(joined["as_of_day"].tolist(), settings.split.validation_days, settings.split.test_days)
        joined["split"] = assign_split(joined["as_of_day"], periods)
        dataset = joined[["customer_id", "event_timestamp", "as_of_day", "split", "churned", *feature_columns]]
        version = frame_version(dataset)
        path = settings.path("datasets", "training", f"{version}.parquet")
        if not path.exists():
            write_parquet_atomic(dataset, path)
        missing = int(dataset[feature_columns].isna().any(axis=1).sum())
        split_rows = dataset["split"].value_counts().to_dict()
        context.log.info(f"training dataset {version}: {len(dataset)} rows {split_rows}")
        value = {
            "version": version,
            "path": str(path),
            "feature_service": settings.feature_service,
            "feature_schema_hash": feast.feature_schema_hash(settings.feature_service),
            "features": feature_columns,
            "periods": periods.as_metadata(),
        }
        return Output(
            value,
            metadata={
                "dataset_version": version,
                "positive_rate": float(dataset["churned"].mean()),
                "rows_per_split": MetadataValue.json({k: int(v) for k, v in split_rows.items()}),
                "periods": MetadataValue.json(periods.as_metadata()),
                "feature_refs": MetadataValue.json([f"{settings.feature_service}: {c}" for c in feature_columns]),
                "rows_missing_features": missing,
                **table_metadata(dataset, path),
            },
            data_version=DataVersion(version),
        )

    def _split(dataset: pd.DataFrame, features: list[str], name: str) -> tuple[np.ndarray, np.ndarray]:
        part = dataset[dataset["split"] == name]
        return part[features].astype("float64").fillna(0.0).to_numpy(), part["churned"].to_numpy()

    def _evaluate_and_log(context, model: TrainedModel, dataset_info: dict) -> dict:
        """Score validation and test, log params/metrics/model to a nested MLflow run, return the summary."""
        import mlflow as mlflow_lib
        from mlflow.models import infer_signature

        dataset = pd.read_parquet(dataset_info["path"])
        features = dataset_info["features"]
        x_val, y_val = _split(dataset, features, "validation")
        x_test, y_test = _split(dataset, features, "test")
        val_scores, test_scores = model.predict(x_val), model.predict(x_test)
        threshold = best_f1_threshold(y_val, val_scores)
        model.spec["threshold"] = threshold
        model.spec_path.write_text(json.dumps(model.spec))
        metrics = {
            **{f"validation_{k}": v for k, v in classification_metrics(y_val, val_scores, threshold).items()},
            **{f"test_{k}": v for k, v in classification_metrics(y_test, test_scores, threshold).items()},
            "threshold": threshold,
            "train_seconds": model.train_seconds,
        }
        mlflow = context.resources.mlflow
        with mlflow.start_run(run_name=f"{model.kind}-{dataset_info['version']}", nested=True) as run:
            mlflow.log_params({**model.params, "training_dataset_version": dataset_info["version"]})
            mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
            # The validation scores are the reference of the prediction-drift check.
            scores_path = model.spec_path.with_name(VALIDATION_SCORES)
            pd.DataFrame({"score": val_scores}).to_parquet(scores_path, index=False)
            mlflow.log_artifact(str(scores_path))
            # Floats: the scorer reads every feature as float64, and missing values stay representable.
            example = dataset[features].head(5).astype("float64")
            info = mlflow_lib.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("scorer.py")),
                artifacts=model.artifacts,
                signature=infer_signature(example, model.predict(example.to_numpy())),
                input_example=example,
                # Naming the requirements skips MLflow's slow requirement inference.
                pip_requirements=_pip_requirements(model.kind),
            )
        context.log.info(
            f"{model.kind}: validation PR-AUC {metrics['validation_pr_auc']:.3f}, "
            f"test PR-AUC {metrics['test_pr_auc']:.3f}, ROC-AUC {metrics['test_roc_auc']:.3f}"
        )
        return {
            "kind": model.kind,
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "metrics": metrics,
        }

    def _model_output(context, summary: dict) -> Output:
        metrics = summary["metrics"]
        return Output(
            summary,
            metadata={
                "mlflow_run": MetadataValue.url(context.resources.registry.run_url(summary["run_id"])),
                "model_uri": summary["model_uri"],
                # One number per metric, so each plots across materializations in the UI.
                **{name: float(value) for name, value in metrics.items()},
            },
        )

    @asset(
        name="sklearn_model",
        group_name="training",
        required_resource_keys={"mlflow", "registry"},
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        description="Standardized logistic regression baseline, trained on the train period and logged to MLflow.",
    )
    def sklearn_model(context: AssetExecutionContext, config: SklearnConfig, training_dataset: dict):
        dataset = pd.read_parquet(training_dataset["path"])
        x, y = _split(dataset, training_dataset["features"], "train")
        out_dir = settings.path("models", f"sklearn-{context.run.run_id}")
        model = train_sklearn_baseline(x, y, training_dataset["features"], out_dir, seed=config.seed, c=config.c)
        return _model_output(context, _evaluate_and_log(context, model, training_dataset))

    @asset(
        name="mlp_model",
        group_name="training",
        required_resource_keys={"mlflow", "registry", "torch_device"},
        kinds={"pytorch", "mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        pool="gpu",
        op_tags=GPU_OP_TAGS,
        description=(
            "PyTorch MLP on the same data; trains on CUDA when present, else the CPU. Runs in the `gpu` "
            "concurrency pool and carries a Kubernetes GPU limit for the k8s executor."
        ),
    )
    def mlp_model(context: AssetExecutionContext, config: MlpConfig, training_dataset: dict):
        dataset = pd.read_parquet(training_dataset["path"])
        x, y = _split(dataset, training_dataset["features"], "train")
        device = context.resources.torch_device.device()
        context.log.info(f"training the MLP on {device}: {len(x)} rows, {config.epochs} epochs")
        model = train_mlp(
            x,
            y,
            training_dataset["features"],
            settings.path("models", f"mlp-{context.run.run_id}"),
            seed=config.seed,
            device=device,
            hidden=config.hidden,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            log_epoch=lambda epoch, loss: context.log.info(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4f}"),
        )
        return _model_output(context, _evaluate_and_log(context, model, training_dataset))

    def _test_rows(training_dataset: dict) -> pd.DataFrame:
        dataset = pd.read_parquet(training_dataset["path"])
        return dataset[dataset["split"] == "test"].reset_index(drop=True)

    def _champion_scores(registry: ModelRegistryResource, feast: FeastResource, test: pd.DataFrame):
        """The champion's scores on the candidate's test rows, with the features it was trained on."""
        champion = registry.champion()
        if champion is None:
            return None, None
        service = champion.tags["feature_service"]
        rows = test
        if service != settings.feature_service:
            store = feast.store()
            rows = store.get_historical_features(
                entity_df=test[["customer_id", "event_timestamp"]], features=store.get_feature_service(service)
            ).to_df()
            rows = rows.merge(test[["customer_id", "event_timestamp"]], on=["customer_id", "event_timestamp"])
        model = registry.load_model(champion.version)
        inputs = rows[model.metadata.get_input_schema().input_names()].astype("float64")
        return champion, np.asarray(model.predict(inputs), dtype="float64")

    @asset(
        name="candidate_model",
        group_name="training",
        kinds={"mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        check_specs=[
            AssetCheckSpec(name, asset="candidate_model", blocking=True, description=text)
            for name, text in GATE_CHECKS.items()
        ],
        description=(
            "The better of the trained models on the validation period (PR-AUC), registered in MLflow as a new "
            "version with its feature service, feature schema hash, training dataset version, code version "
            "and git commit, then judged by the promotion gates (blocking checks) on its test period."
        ),
    )
    def candidate_model(
        context: AssetExecutionContext,
        registry: ModelRegistryResource,
        feast: FeastResource,
        lake: LakeResource,
        training_dataset: dict,
        sklearn_model: dict,
        mlp_model: dict,
    ):
        import mlflow

        # The registry's URI for everything below (loading the logged model, registering the version).
        mlflow.set_tracking_uri(registry.tracking_uri)
        best = max([sklearn_model, mlp_model], key=lambda m: m["metrics"]["validation_pr_auc"])
        test = _test_rows(training_dataset)
        candidate_scores = np.asarray(
            mlflow.pyfunc.load_model(best["model_uri"]).predict(test[training_dataset["features"]].astype("float64")),
            dtype="float64",
        )
        champion, champion_scores = _champion_scores(registry, feast, test)
        customers = pd.read_parquet(
            lake.table_path("raw_customers"), columns=["customer_id", settings.gates.fairness_group]
        )
        groups = test[["customer_id"]].merge(customers, on="customer_id", how="left")[settings.gates.fairness_group]
        gates = evaluate_gates(
            test["churned"].to_numpy(),
            candidate_scores,
            best["metrics"]["threshold"],
            champion_scores,
            groups,
            settings.gates,
        ).to_dict()
        tags = {
            "feature_service": training_dataset["feature_service"],
            "feature_schema_hash": training_dataset["feature_schema_hash"],
            "training_dataset_version": training_dataset["version"],
            "code_version": MODEL_CODE_VERSION,
            "git_commit": git_commit(),
            "model_kind": best["kind"],
            "mlflow_run_id": best["run_id"],
            "gates": "passed" if gates["passed"] else f"failed: {gates['reason']}",
            "retrain_reason": context.run.tags.get(run_tags.RETRAIN_REASON, "scheduled or manual"),
            **{k: repr(v) for k, v in best["metrics"].items()},
        }
        version = mlflow.register_model(best["model_uri"], registry.model_name, tags=tags)
        context.log.info(
            f"registered {registry.model_name} version {version.version} ({best['kind']}); gates: {gates['reason']}"
        )
        summary = {
            "version": str(version.version),
            **best,
            "tags": tags,
            "gates": gates,
            "champion_at_evaluation": str(champion.version) if champion is not None else None,
        }
        yield Output(
            summary,
            metadata={
                "model_version": str(version.version),
                "model_kind": best["kind"],
                # One number per metric, so each plots across model versions in the UI.
                **{name: float(value) for name, value in best["metrics"].items()},
                "gates_passed": gates["passed"],
                "mlflow_model_version": MetadataValue.url(registry.version_url(version.version)),
                "mlflow_run": MetadataValue.url(registry.run_url(best["run_id"])),
                "compared": MetadataValue.json(
                    {m["kind"]: round(m["metrics"]["validation_pr_auc"], 4) for m in (sklearn_model, mlp_model)}
                ),
                "tags": MetadataValue.json(tags),
            },
        )
        for name, gate in gates["gates"].items():
            yield AssetCheckResult(
                check_name=name,
                passed=gate["passed"],
                metadata={"reason": gate["reason"], "values": MetadataValue.json(gate["values"])},
            )

    @asset(
        name="champion_model",
        group_name="training",
        kinds={"mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        description=(
            "Moves the MLflow alias `champion` to the candidate when every promotion gate passed (in any run: "
            "the gates are re-read here, not only enforced as blocking checks of the same run). Every alias "
            "move is recorded in the registry: when, from, to, why. Inference serves what the alias points at."
        ),
    )
    def champion_model(context: AssetExecutionContext, registry: ModelRegistryResource, candidate_model: dict):
        current = registry.champion()
        gates = candidate_model["gates"]
        evaluated_against = candidate_model["champion_at_evaluation"]
        current_version = str(current.version) if current is not None else None
        if gates["passed"] and evaluated_against != current_version:
            promote, reason = (
                False,
                (
                    f"gates were evaluated against champion v{evaluated_against}, but the champion is now "
                    f"v{current_version}: train again"
                ),
            )
        else:
            promote, reason = gates["passed"], gates["reason"]
        move = registry.move_champion(candidate_model["version"], "promotion", reason) if promote else None
        champion = registry.champion()
        context.log.info(
            f"candidate v{candidate_model['version']} {'promoted' if promote else 'not promoted'}: {reason}"
        )
        return MaterializeResult(
            metadata={
                "champion_version": str(champion.version) if champion else "none",
                "candidate_version": candidate_model["version"],
                "promoted": promote,
                "reason": reason,
                "previous_champion": current_version or "none",
                "alias_move": MetadataValue.json(move or {}),
                "feature_service": champion.tags.get("feature_service", "") if champion else "",
                **(
                    {"mlflow_model_version": MetadataValue.url(registry.version_url(champion.version))}
                    if champion
                    else {}
                ),
            },
            data_version=DataVersion(str(champion.version) if champion else "none"),
        )

    return [churn_labels, training_dataset, sklearn_model, mlp_model, candidate_model, champion_model]


def _pip_requirements(kind: str) -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "pandas", "numpy"] + (["scikit-learn"] if kind == "sklearn" else ["torch"])
    return [f"{name}=={version(name)}" for name in names]
