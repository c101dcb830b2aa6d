"""The candidate models: a logistic-regression baseline, gradient-boosted trees, a PyTorch MLP and the mean of
some of them, each logged to MLflow with its validation and test metrics, its permutation importance and the
scorer that serves it."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, Output, asset
from pydantic import Field

from fti_assets.resources.mlflow import VALIDATION_SCORES
from fti_assets.settings import ProjectSettings
from fti_assets.training.assets.common import (
    GPU_OP_TAGS,
    MODEL_CODE_VERSION,
    OWNERS,
    pip_requirements,
    split_arrays,
)
from fti_assets.training.evaluation import permutation_importance
from fti_assets.training.models import (
    TrainedModel,
    best_average,
    best_f1_threshold,
    classification_metrics,
    train_hgb,
    train_mlp,
    train_sklearn_baseline,
)

# The scorer stored with every model: what serving and batch inference load.
SCORER_FILE = Path(__file__).parent.parent / "scorer.py"


class SklearnConfig(Config):
    c: float = Field(default=1.0, description="Inverse regularization strength of the logistic regression.")
    seed: int = 7


class HgbConfig(Config):
    """Hyperparameters of `train_hgb`, by the same names."""

    learning_rate: float = Field(default=0.05, gt=0, description="Shrinkage of each tree's contribution.")
    max_iter: int = Field(default=500, ge=1, description="Upper bound on trees; early stopping usually ends sooner.")
    # Small trees with large leaves: churn labels are noisy (a purchase is a rare event), and deeper trees with
    # smaller leaves scored lower on held-out days of both bench data sets (bench/model_quality.py).
    max_leaf_nodes: int = Field(default=7, ge=2, description="Leaves per tree: the order of interactions learnt.")
    min_samples_leaf: int = Field(
        default=200, ge=1, description="Rows a leaf needs: small leaves fit the noise of sparse purchase logs."
    )
    l2_regularization: float = Field(default=1.0, ge=0, description="L2 penalty on leaf values.")
    max_features: float = Field(
        default=1.0, gt=0, le=1, description="Share of the features each split considers (drawn with the seed)."
    )
    patience: int = Field(default=20, ge=1, description="Trees without a better validation loss before stopping.")
    seed: int = 7


class EnsembleConfig(Config):
    seed: int = Field(default=7, description="Seed of the shuffles that measure the ensemble's permutation importance.")


class MlpConfig(Config):
    hidden: list[int] = Field(default=[64, 32], description="Hidden layer widths.")
    max_epochs: int = Field(default=30, ge=1, description="Upper bound; early stopping usually ends sooner.")
    patience: int = Field(default=3, ge=1, description="Epochs without a better validation loss before stopping.")
    batch_size: int = 1024
    learning_rate: float = 2e-3
    seed: int = 7


def evaluate_and_log(context, model: TrainedModel, dataset_info: dict) -> dict:
    """Score validation and test, log params/metrics/model to a nested MLflow run, return the summary."""
    import mlflow as mlflow_lib
    from mlflow.models import infer_signature

    features = dataset_info["features"]
    x_val, y_val = split_arrays(dataset_info, "validation")
    x_test, y_test = split_arrays(dataset_info, "test")
    val_scores, test_scores = model.predict(x_val), model.predict(x_test)
    importance = permutation_importance(model.predict, x_test, y_test, features, seed=model.params["seed"])
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
        # One metric per feature (compared across runs in MLflow) and the table with its spread.
        mlflow.log_metrics(
            {f"importance/{r.feature}": r.importance for r in importance.itertuples() if np.isfinite(r.importance)}
        )
        importance_path = model.spec_path.with_name("permutation_importance.json")
        importance_path.write_text(importance.to_json(orient="records", indent=2))
        mlflow.log_artifact(str(importance_path))
        # The validation scores are the reference of the prediction-drift check.
        scores_path = model.spec_path.with_name(VALIDATION_SCORES)
        pd.DataFrame({"score": val_scores}).to_parquet(scores_path, index=False)
        mlflow.log_artifact(str(scores_path))
        # Floats: the scorer reads every feature as float64, and missing values stay representable.
        example = pd.DataFrame(x_val[:5], columns=features)
        info = mlflow_lib.pyfunc.log_model(
            name="model",
            python_model=str(SCORER_FILE),
            artifacts=model.artifacts,
            signature=infer_signature(example, model.predict(example.to_numpy())),
            input_example=example,
            # Naming the requirements skips MLflow's slow requirement inference.
            pip_requirements=pip_requirements(model.spec),
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
        "importance": importance.to_dict(orient="records"),
    }


def model_output(context, summary: dict) -> Output:
    metrics = summary["metrics"]
    importance = summary["importance"]
    return Output(
        summary,
        metadata={
            "mlflow_run": MetadataValue.url(context.resources.registry.run_url(summary["run_id"])),
            "model_uri": summary["model_uri"],
            # One number per metric and per feature's importance, so each plots across materializations in the UI.
            **{name: float(value) for name, value in metrics.items()},
            **{f"importance/{r['feature']}": float(r["importance"]) for r in importance},
            "permutation_importance": MetadataValue.md(
                "Test PR-AUC lost when the feature is shuffled (mean and std over shuffles):\n\n"
                "| feature | PR-AUC drop | std |\n|---|---|---|\n"
                + "\n".join(f"| {r['feature']} | {r['importance']:.4f} | {r['std']:.4f} |" for r in importance)
            ),
        },
    )


def build_tabular_model(
    settings: ProjectSettings,
    name: str,
    config_type: type[Config],
    train: Callable[[Config, dict, Path], TrainedModel],
    description: str,
    metadata: Callable[[TrainedModel], dict] = lambda model: {},
) -> AssetsDefinition:
    """A scikit-learn model asset: ``train(config, training_dataset, out_dir)`` on the CPU, then logged."""

    @asset(
        name=name,
        group_name="training",
        required_resource_keys={"mlflow", "registry"},
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        description=description,
    )
    def model_asset(context: AssetExecutionContext, config: config_type, training_dataset: dict):
        out_dir = settings.path("models", f"{name.removesuffix('_model')}-{context.run.run_id}")
        model = train(config, training_dataset, out_dir)
        output = model_output(context, evaluate_and_log(context, model, training_dataset))
        output.metadata.update(metadata(model))
        return output

    return model_asset


def build_sklearn_model(settings: ProjectSettings) -> AssetsDefinition:
    def train(config: SklearnConfig, training_dataset: dict, out_dir: Path) -> TrainedModel:
        x, y = split_arrays(training_dataset, "train")
        return train_sklearn_baseline(x, y, training_dataset["features"], out_dir, seed=config.seed, c=config.c)

    return build_tabular_model(
        settings,
        "sklearn_model",
        SklearnConfig,
        train,
        "Standardized logistic regression baseline, trained on the train period and logged to MLflow.",
    )


def build_hgb_model(settings: ProjectSettings) -> AssetsDefinition:
    def train(config: HgbConfig, training_dataset: dict, out_dir: Path) -> TrainedModel:
        x, y = split_arrays(training_dataset, "train")
        x_val, y_val = split_arrays(training_dataset, "validation")
        return train_hgb(x, y, x_val, y_val, training_dataset["features"], out_dir, **config.model_dump())

    return build_tabular_model(
        settings,
        "hgb_model",
        HgbConfig,
        train,
        "Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the raw features, trees added "
        "until the validation loss stops improving; logged to MLflow.",
        lambda model: {
            "trees": MetadataValue.int(model.params["trees"]),
            "best_trees": MetadataValue.int(model.params["best_trees"]),
        },
    )


def build_mlp_model(settings: ProjectSettings) -> AssetsDefinition:
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
        x, y = split_arrays(training_dataset, "train")
        x_val, y_val = split_arrays(training_dataset, "validation")
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
        output = model_output(context, evaluate_and_log(context, model, training_dataset))
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

    return mlp_model


def logged_model(summary: dict, out_dir: Path) -> TrainedModel:
    """A candidate as its asset logged it to MLflow (its summary names the model): the scorer's files, downloaded
    (this step may run on another machine than the candidate's), and their scores through the stored scorer."""
    import mlflow
    from mlflow.models import Model
    from mlflow.pyfunc import PythonModelContext

    from fti_assets.training.scorer import ChurnScorer

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=summary["model_uri"], dst_path=str(out_dir)))
    logged = Model.load(str(local)).flavors["python_function"]["artifacts"]
    files = {name: local / entry["path"] for name, entry in logged.items()}
    scorer = ChurnScorer()
    scorer.load_context(
        PythonModelContext(artifacts={name: str(path) for name, path in files.items()}, model_config={})
    )
    model = TrainedModel(summary["kind"], {}, scorer.spec, {"weights": files["weights"]}, files["model_json"])
    model.predict = scorer.predict_matrix  # type: ignore[attr-defined]
    return model


def build_ensemble_model(settings: ProjectSettings) -> AssetsDefinition:
    @asset(
        name="ensemble_model",
        group_name="training",
        required_resource_keys={"mlflow", "registry"},
        kinds={"scikitlearn", "pytorch", "mlflow"},
        owners=OWNERS,
        code_version=MODEL_CODE_VERSION,
        description=(
            "The mean of the churn probabilities of two or more of the trained candidates (logistic regression, "
            "gradient-boosted trees, MLP): of every such mean, the one with the best validation PR-AUC. Logged to "
            "MLflow as one model that carries its members' weights, so it serves like any candidate."
        ),
    )
    def ensemble_model(
        context: AssetExecutionContext,
        config: EnsembleConfig,
        training_dataset: dict,
        sklearn_model: dict,
        hgb_model: dict,
        mlp_model: dict,
    ):
        out_dir = settings.path("models", f"ensemble-{context.run.run_id}")
        # Summed in this order, here and by the scorer.
        members = [logged_model(m, out_dir / "members" / m["kind"]) for m in (sklearn_model, hgb_model, mlp_model)]
        x_val, y_val = split_arrays(training_dataset, "validation")
        model, compared = best_average(members, x_val, y_val, out_dir / "model", seed=config.seed)
        context.log.info(f"ensemble of {model.params['members']}; validation PR-AUC of each mean: {compared}")
        summary = {**evaluate_and_log(context, model, training_dataset), "members": model.params["members"]}
        output = model_output(context, summary)
        output.metadata.update(
            {
                "members": model.params["members"],
                "compared": MetadataValue.json({name: round(value, 4) for name, value in compared.items()}),
            }
        )
        return output

    return ensemble_model
