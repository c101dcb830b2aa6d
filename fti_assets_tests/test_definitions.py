"""The one Definitions object loads, every asset is documented, and the graph matches its snapshot."""

import json
import os
from pathlib import Path

import pytest

from fti_assets.definitions import build_definitions
from fti_assets.settings import load_settings

SNAPSHOT = Path(__file__).with_name("asset_specs_snapshot.json")


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    return build_definitions(load_settings(data_dir=str(tmp_path_factory.mktemp("defs"))))


def asset_specs(defs) -> dict:
    graph = defs.resolve_asset_graph()
    specs = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        specs[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "pool": defs.resolve_assets_def(key).op.pool,
        }
    return specs


def test_module_level_definitions_load():
    from fti_assets import definitions

    assert definitions.defs.resolve_job_def("training_job") is not None


def test_every_asset_has_description_group_kinds_owners_and_code_version(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, name
        assert node.group_name in {"ingestion", "features", "training", "inference", "monitoring"}, name
        assert node.kinds, name
        assert node.owners, name
        assert node.code_version, name


def test_lineage_runs_from_the_source_to_the_predictions(defs):
    graph = defs.resolve_asset_graph()
    from dagster import AssetKey

    upstream = graph.get_ancestor_asset_keys(AssetKey("churn_predictions"))
    assert {
        AssetKey("raw_transactions"),
        AssetKey("customer_features"),
        AssetKey("champion_model"),
    } <= upstream


def test_the_pytorch_step_carries_the_gpu_pool_and_kubernetes_gpu_limit(defs):
    from dagster import AssetKey

    op = defs.resolve_assets_def(AssetKey("mlp_model")).op
    assert op.pool == "gpu"
    limits = json.loads(op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}


def test_asset_specs_match_the_snapshot(defs):
    """A change of the graph shows up in review; FTI_UPDATE_SNAPSHOT=1 rewrites the snapshot."""
    current = asset_specs(defs)
    if os.environ.get("FTI_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_dagster_yaml_limits_the_gpu_pool_to_one(tmp_path):
    from fti_assets_tests.conftest import dagster_instance

    instance = dagster_instance(tmp_path / "home")
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
