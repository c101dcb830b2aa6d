"""What the training assets share: names, owners, code versions, and readers of the dataset file."""

import os
import subprocess

import numpy as np
import pandas as pd

from fti_assets.settings import PROJECT_ROOT

OWNERS = ["team:ml"]
LABELS = "churn_labels"
MODEL_CODE_VERSION = "5"
# Where the PyTorch step runs when the steps are spread out (deploy/, fti_assets/scaleout.py); inert in process.
# k8s_job_executor: a GPU limit, on a GPU node (node selector + the usual GPU-node taint tolerated).
# celery_executor: the `gpu` queue, which only the GPU workers serve (scripts/workers.sh).
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    "dagster-celery/queue": "gpu",
}


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


def readsplit_arrays(dataset_info: dict, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One split's rows of the dataset file, only the columns asked for: never the whole file."""
    columns = columns or [*dataset_info["features"], "churned"]
    return pd.read_parquet(dataset_info["path"], columns=columns, filters=[("split", "==", name)])


def split_arrays(dataset_info: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    part = readsplit_arrays(dataset_info, name)
    return part[dataset_info["features"]].fillna(0.0).to_numpy("float64"), part["churned"].to_numpy()


def test_rows(training_dataset: dict) -> pd.DataFrame:
    columns = ["customer_id", "event_timestamp", "churned", *training_dataset["features"]]
    return readsplit_arrays(training_dataset, "test", columns).reset_index(drop=True)


def pip_requirements(spec: dict) -> list[str]:
    """What the scorer of a model spec imports: torch for an MLP, scikit-learn for the rest; an ensemble's
    members' together."""
    from importlib.metadata import version

    kinds = {member["kind"] for member in spec.get("members", [spec])}
    names = [
        "mlflow",
        "pandas",
        "numpy",
        *(["torch"] if "mlp" in kinds else []),
        *(["scikit-learn"] if kinds - {"mlp"} else []),
    ]
    return [f"{name}=={version(name)}" for name in names]
