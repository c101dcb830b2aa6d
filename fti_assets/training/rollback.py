"""Rollback: move `champion` back to an earlier version, only if the features it needs still exist.

`make rollback VERSION=N REASON="..."` or the `rollback_job` in the UI (config: version, reason).
"""

import argparse
import sys

from dagster import AssetKey, AssetMaterialization, Config, Failure, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from fti_assets.resources.feast import FeastResource
from fti_assets.resources.mlflow import ModelRegistryResource


class RollbackRefused(Exception):
    """The version cannot serve: it does not exist, or its features no longer do."""


def rollback(registry: ModelRegistryResource, feast: FeastResource, version: str, reason: str) -> dict:
    """Point `champion` at ``version`` after checking its feature service and schema hash; return the move."""
    target = registry.version(version)
    if target is None:
        raise RollbackRefused(f"model {registry.model_name} has no version {version}")
    service = target.tags.get("feature_service")
    services = {s.name for s in feast.store().list_feature_services()}
    if service not in services:
        raise RollbackRefused(
            f"version {version} was trained with feature service {service!r}, which no longer exists "
            f"(existing: {sorted(services)}): it cannot be served with the features it was trained on"
        )
    current_hash, trained_hash = feast.feature_schema_hash(service), target.tags.get("feature_schema_hash")
    if current_hash != trained_hash:
        raise RollbackRefused(
            f"feature service {service!r} now has schema {current_hash}, but version {version} was trained on "
            f"{trained_hash}: its features changed since"
        )
    return registry.move_champion(str(version), "rollback", reason)


class RollbackConfig(Config):
    version: str = Field(description="Model version to make the champion again.")
    reason: str = Field(description="Why; recorded with the alias move.")


@op(description="Move the champion alias back to a version whose feature service and schema still exist.")
def rollback_champion(
    context: OpExecutionContext, config: RollbackConfig, registry: ModelRegistryResource, feast: FeastResource
) -> None:
    try:
        move = rollback(registry, feast, config.version, config.reason)
    except RollbackRefused as refused:
        raise Failure(description=f"rollback refused: {refused}") from refused
    context.log.info(f"champion moved from v{move['from']} to v{move['to']}: {config.reason}")
    # Recorded on champion_model, so the UI's history of the champion shows rollbacks beside promotions.
    context.log_event(
        AssetMaterialization(
            asset_key=AssetKey("champion_model"),
            metadata={
                "champion_version": move["to"],
                "previous_champion": move["from"] or "none",
                "promoted": False,
                "reason": f"rollback: {config.reason}",
                "alias_move": MetadataValue.json(move),
            },
        )
    )


@job(name="rollback_job", description="Roll the champion back to an earlier model version (config: version, reason).")
def rollback_job():
    rollback_champion()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Move the champion alias back to an earlier model version.")
    parser.add_argument("--version", required=True)
    parser.add_argument("--reason", default="manual rollback")
    args = parser.parse_args(argv)
    from dagster import DagsterInstance

    from fti_assets.resources.build import build_resources
    from fti_assets.settings import load_settings

    # The resources the Definitions give the job, from the same settings (FTI_CONFIG), without the asset graph.
    resources = build_resources(load_settings())
    with DagsterInstance.get() as instance:
        result = rollback_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"rollback_champion": {"config": {"version": args.version, "reason": args.reason}}}},
            resources={name: resources[name] for name in ("registry", "feast")},
            raise_on_error=False,
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = failure.step_failure_data.user_failure_data.description if failure else "rollback failed"
        print(message, file=sys.stderr)
        return 1
    print(f"champion is now version {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
