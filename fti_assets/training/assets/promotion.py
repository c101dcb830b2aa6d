"""Promotion: the best candidate registered and judged by the gates (blocking checks), then the `champion`
alias moved to it only if the gates passed and it scores probe rows as probabilities."""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)

from fti_assets import tags as run_tags
from fti_assets.probe import probe_failure
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.settings import ProjectSettings
from fti_assets.training.assets.common import MODEL_CODE_VERSION, OWNERS, git_commit, test_rows
from fti_assets.training.evaluation import evaluate_gates

GATE_CHECKS = {
    "beats_champion": "PR-AUC beats the champion's on the same test rows by the margin; ROC-AUC within tolerance.",
    "beats_recency": "ROC-AUC and PR-AUC beat days since the last purchase alone on the same test rows.",
    "calibration": "Brier score of the candidate on its test period within the bound.",
    "fairness": "Recall and positive-prediction-rate gaps between customer groups within the bounds.",
}
# Rows a candidate scores before the alias moves to it; each score must be a probability.
PROBE_ROWS = 256


def scores_of_champion(registry: ModelRegistryResource, feast: FeastResource, test: pd.DataFrame, feature_service: str):
    """The champion's scores on the candidate's test rows, with the features it was trained on."""
    champion = registry.champion()
    if champion is None:
        return None, None
    service = champion.tags["feature_service"]
    rows = test
    if service != feature_service:
        # The same rows, in the same order, with the features of the service the champion was trained on.
        rows = feast.historical_features(service, test[["customer_id", "event_timestamp"]])
    model = registry.load_model(champion.version)
    inputs = rows[model.metadata.get_input_schema().input_names()].astype("float64")
    return champion, np.asarray(model.predict(inputs), dtype="float64")


def probe_candidate(registry: ModelRegistryResource, feast: FeastResource, version: str, dataset_info: dict):
    """Why ``version`` cannot serve (its scores on probe rows are not probabilities), or None; and where
    the rows came from. Probe rows: customers of the last test day as the online store serves them, or
    their offline rows before the store's first write."""
    test = test_rows(dataset_info)
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


def build_candidate_model(settings: ProjectSettings) -> AssetsDefinition:
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
            "The best of the trained models (logistic regression, gradient-boosted trees, MLP, the ensemble of "
            "some of them) on the validation period (PR-AUC), registered in MLflow as a new version with its "
            "feature service, feature schema hash, training dataset version, code version and git commit, then "
            "judged by the promotion gates (blocking checks) on its test period."
        ),
    )
    def candidate_model(
        context: AssetExecutionContext,
        registry: ModelRegistryResource,
        feast: FeastResource,
        lake: LakeResource,
        training_dataset: dict,
        sklearn_model: dict,
        hgb_model: dict,
        mlp_model: dict,
        ensemble_model: dict,
    ):
        import mlflow

        trained = [sklearn_model, hgb_model, mlp_model, ensemble_model]

        # The registry's URI for everything below (loading the logged model, registering the version).
        mlflow.set_tracking_uri(registry.tracking_uri)
        mlflow.set_registry_uri(registry.tracking_uri)  # not a registry URI some other code set process-wide
        best = max(trained, key=lambda m: m["metrics"]["validation_pr_auc"])
        test = test_rows(training_dataset)
        candidate_scores = np.asarray(
            mlflow.pyfunc.load_model(best["model_uri"]).predict(test[training_dataset["features"]].astype("float64")),
            dtype="float64",
        )
        champion, champion_scores = scores_of_champion(registry, feast, test, settings.feature_service)
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
            days_since_last_purchase=(
                test["days_since_last_purchase"].to_numpy("float64") if "days_since_last_purchase" in test else None
            ),
        ).to_dict()
        tags = {
            "feature_service": training_dataset["feature_service"],
            "feature_schema_hash": training_dataset["feature_schema_hash"],
            "training_dataset_version": training_dataset["version"],
            "code_version": MODEL_CODE_VERSION,
            "git_commit": git_commit(),
            "model_kind": best["kind"],
            **({"ensemble_members": best["members"]} if "members" in best else {}),
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
                    {m["kind"]: round(m["metrics"]["validation_pr_auc"], 4) for m in trained}
                ),
                "tags": MetadataValue.json(tags),
            },
        )
        for name, gate in gates["gates"].items():
            yield AssetCheckResult(
                check_name=name,
                passed=gate["passed"],
                metadata={
                    "reason": gate["reason"],
                    "values": MetadataValue.json(gate["values"]),
                    # Each number also on its own, so the UI plots it across model versions.
                    **{
                        key: float(value)
                        for key, value in gate["values"].items()
                        if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
                    },
                },
            )

    return candidate_model


def build_champion_model(settings: ProjectSettings) -> AssetsDefinition:
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
            failure, probe = probe_candidate(registry, feast, candidate_model["version"], training_dataset)
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

    return champion_model
