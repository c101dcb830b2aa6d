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
from fti_assets.metadata import column_schema, preview
from fti_assets.partitions import DaySlices, Progress, chunks, daily_partitions, run_days
from fti_assets.probe import probe_failure
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource, days
from fti_assets.resources.mlflow import VALIDATION_SCORES, ModelRegistryResource
from fti_assets.settings import PROJECT_ROOT, ProjectSettings
from fti_assets.training.dataset import VersionedParquetWriter, assign_split, split_by_time, stride_sample
from fti_assets.training.evaluation import evaluate_gates
from fti_assets.training.labels import compute_churn_labels, label_days
from fti_assets.training.models import (
    TrainedModel,
    best_f1_threshold,
    classification_metrics,
    train_mlp,
    train_sklearn_baseline,
)

OWNERS = ["team:ml"]

GATE_CHECKS = {
    "beats_champion": "PR-AUC beats the champion's on the same test rows by the margin; ROC-AUC within tolerance.",
    "calibration": "Brier score of the candidate on its test period within the bound.",
    "fairness": "Recall and positive-prediction-rate gaps between customer groups within the bounds.",
}
LABELS = "churn_labels"
# Rows a candidate scores before the alias moves to it; each score must be a probability.
PROBE_ROWS = 256
MODEL_CODE_VERSION = "2"
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
    max_epochs: int = Field(default=30, ge=1, description="Upper bound; early stopping usually ends sooner.")
    patience: int = Field(default=3, ge=1, description="Epochs without a better validation loss before stopping.")
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
        code_version="2",
        description=(
            f"Labels joined point-in-time to the features of the `{settings.feature_service}` FeatureService "
            "(Feast's get_historical_features semantics, as one DuckDB ASOF join), split by time into train / "
            f"validation / test; the train split keeps one example per customer every "
            f"{settings.split.train_stride_days} days. Written once per content hash under datasets/training/ "
            "and never overwritten."
        ),
    )
    def training_dataset(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
        labels = lake.read_days(LABELS, settings.start_date, settings.end_exclusive)
        if labels.empty:
            raise ValueError("no labelled day yet: materialize churn_labels for days whose horizon is complete")
        periods = split_by_time(
            labels["as_of_day"].unique().tolist(), settings.split.validation_days, settings.split.test_days
        )
        split = assign_split(labels["as_of_day"], periods)
        stride = settings.split.train_stride_days
        labels = labels[(split != "train") | stride_sample(labels, stride)]
        entity_df = labels[["customer_id", "event_timestamp", "as_of_day", "churned"]]
        label_days = DaySlices.of(entity_df, "as_of_day")
        feature_columns = feast.feature_columns(settings.feature_service)
        columns = ["customer_id", "event_timestamp", "as_of_day", "split", "churned", *feature_columns]
        progress = Progress(context, len(label_days.bounds))
        writer = VersionedParquetWriter(settings.path("datasets", "training"))
        split_rows, positives, missing, head = {}, 0, 0, None
        try:
            # A chunk of days at a time, each written as it is joined: memory follows the chunk. Each row's
            # point-in-time join is its own, so the chunks change nothing in the result.
            for chunk in chunks(sorted(label_days.bounds), settings.range_chunk_days):
                start, end = label_days.bounds[chunk[0]][0], label_days.bounds[chunk[-1]][1]
                part = feast.historical_features(settings.feature_service, entity_df.iloc[start:end])
                # Sorted, so the same inputs give the same bytes and version; float features, so every part
                # has one schema whether or not its ints have gaps.
                part = part.sort_values(["as_of_day", "customer_id"], ignore_index=True)
                part["customer_id"] = part["customer_id"].astype("string")
                part["split"] = assign_split(part["as_of_day"], periods)
                part = part[columns].astype({c: "float64" for c in feature_columns})
                writer.write(part)
                for name, count in part["split"].value_counts().items():
                    split_rows[name] = split_rows.get(name, 0) + int(count)
                positives += int(part["churned"].sum())
                missing += int(part[feature_columns].isna().any(axis=1).sum())
                head = part.head(5) if head is None else head
                progress.add(len(chunk), len(part))
            version, path = writer.publish()
        except BaseException:
            writer.discard()
            raise
        context.log.info(
            f"training dataset {version}: {writer.rows} rows {split_rows} (train: one example per customer "
            f"every {stride} days)"
        )
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
                "positive_rate": positives / max(writer.rows, 1),
                "rows_per_split": MetadataValue.json(split_rows),
                "train_stride_days": stride,
                "periods": MetadataValue.json(periods.as_metadata()),
                "feature_refs": MetadataValue.json([f"{settings.feature_service}: {c}" for c in feature_columns]),
                "rows_missing_features": missing,
                "dagster/row_count": writer.rows,
                "dagster/column_schema": column_schema(head),
                "preview": preview(head),
                "file": MetadataValue.path(str(path)),
            },
            data_version=DataVersion(version),
        )

    def _read_split(dataset_info: dict, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One split's rows of the dataset file, only the columns asked for: never the whole file."""
        columns = columns or [*dataset_info["features"], "churned"]
        return pd.read_parquet(dataset_info["path"], columns=columns, filters=[("split", "==", name)])

    def _split(dataset_info: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        part = _read_split(dataset_info, name)
        return part[dataset_info["features"]].fillna(0.0).to_numpy("float64"), part["churned"].to_numpy()

    def _evaluate_and_log(context, model: TrainedModel, dataset_info: dict) -> dict:
        """Score validation and test, log params/metrics/model to a nested MLflow run, return the summary."""
        import mlflow as mlflow_lib
        from mlflow.models import infer_signature

        features = dataset_info["features"]
        x_val, y_val = _split(dataset_info, "validation")
        x_test, y_test = _split(dataset_info, "test")
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
            example = pd.DataFrame(x_val[:5], columns=features)
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
        x, y = _split(training_dataset, "train")
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
        x, y = _split(training_dataset, "train")
        x_val, y_val = _split(training_dataset, "validation")
        device = context.resources.torch_device.device()
        context.log.info(f"training the MLP on {device}: {len(x)} rows, at most {config.max_epochs} epochs")

        def log_epoch(record: dict) -> None:
            context.log.info(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
                f"validation {record['validation_loss']:.4f}, "
                f"{record['seconds']:.1f} s ({record['rows_per_second']:,.0f} rows/s)"
            )

        model = train_mlp(
            x,
            y,
            x_val,
            y_val,
            training_dataset["features"],
            settings.path("models", f"mlp-{context.run.run_id}"),
            seed=config.seed,
            device=device,
            hidden=config.hidden,
            max_epochs=config.max_epochs,
            patience=config.patience,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            log_epoch=log_epoch,
        )
        output = _model_output(context, _evaluate_and_log(context, model, training_dataset))
        seconds = [r["seconds"] for r in model.history]
        output.metadata.update(
            {
                "epochs_run": MetadataValue.int(len(model.history)),
                "best_epoch": MetadataValue.int(model.params["best_epoch"]),
                "seconds_per_epoch": MetadataValue.float(float(np.mean(seconds))),
                "train_rows_per_second": MetadataValue.float(len(x) * len(seconds) / max(sum(seconds), 1e-9)),
                "epochs": MetadataValue.md(
                    "| epoch | loss | validation loss | s | rows/s |\n|---|---|---|---|---|\n"
                    + "\n".join(
                        f"| {r['epoch']} | {r['train_loss']:.4f} | {r['validation_loss']:.4f} | {r['seconds']:.2f} "
                        f"| {r['rows_per_second']:,.0f} |"
                        for r in model.history
                    )
                ),
            }
        )
        return output

    def _test_rows(training_dataset: dict) -> pd.DataFrame:
        columns = ["customer_id", "event_timestamp", "churned", *training_dataset["features"]]
        return _read_split(training_dataset, "test", columns).reset_index(drop=True)

    def _champion_scores(registry: ModelRegistryResource, feast: FeastResource, test: pd.DataFrame):
        """The champion's scores on the candidate's test rows, with the features it was trained on."""
        champion = registry.champion()
        if champion is None:
            return None, None
        service = champion.tags["feature_service"]
        rows = test
        if service != settings.feature_service:
            # The same rows, in the same order, with the features of the service the champion was trained on.
            rows = feast.historical_features(service, test[["customer_id", "event_timestamp"]])
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

    def _probe(registry: ModelRegistryResource, feast: FeastResource, version: str, dataset_info: dict):
        """Why ``version`` cannot serve (its scores on probe rows are not probabilities), or None; and where
        the rows came from. Probe rows: customers of the last test day as the online store serves them, or
        their offline rows before the store's first write."""
        test = _test_rows(dataset_info)
        sample = test[test["event_timestamp"] == test["event_timestamp"].max()].head(PROBE_ROWS)
        store = feast.store()
        service = store.get_feature_service(dataset_info["feature_service"])
        online = store.get_online_features(
            features=service, entity_rows=[{"customer_id": c} for c in sample["customer_id"].astype(str)]
        ).to_df()
        online = online.dropna(subset=dataset_info["features"], how="all")
        rows, origin = (online, "online store") if len(online) else (sample, "training dataset")
        model = registry.load_model(version)
        inputs = rows[model.metadata.get_input_schema().input_names()].astype("float64")
        try:
            scores = np.asarray(model.predict(inputs), dtype="float64").ravel()
        except Exception as exc:  # a model that cannot score cannot serve: say why instead of failing the run
            return f"scoring failed: {type(exc).__name__}: {exc}", origin
        return probe_failure(scores, len(rows)), f"{len(rows)} rows from the {origin}"

    @asset(
        name="champion_model",
        group_name="training",
        kinds={"mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        description=(
            "Moves the MLflow alias `champion` to the candidate when every promotion gate passed (in any run: "
            "the gates are re-read here, not only enforced as blocking checks of the same run). Every alias "
            "move is recorded in the registry: when, from, to, why. Before the move the candidate scores probe "
            "rows (the online store's, else the last test day's): a score that is not a finite probability "
            "refuses it. Inference serves what the alias points at."
        ),
    )
    def champion_model(
        context: AssetExecutionContext,
        registry: ModelRegistryResource,
        feast: FeastResource,
        candidate_model: dict,
        training_dataset: dict,
    ):
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
        probe = "not run: the gates refused"
        if promote:
            failure, probe = _probe(registry, feast, candidate_model["version"], training_dataset)
            if failure:
                promote, reason = False, f"probe rows ({probe}): {failure}; the champion stays"
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
                "probe": probe,
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
