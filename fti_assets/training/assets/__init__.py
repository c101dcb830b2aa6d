"""Training pipeline assets, one module each: labels, the point-in-time dataset, candidate models, promotion."""

from fti_assets.settings import ProjectSettings
from fti_assets.training.assets.candidates import (
    build_ensemble_model,
    build_hgb_model,
    build_mlp_model,
    build_sklearn_model,
)
from fti_assets.training.assets.dataset import build_training_dataset
from fti_assets.training.assets.labels import build_churn_labels
from fti_assets.training.assets.promotion import build_candidate_model, build_champion_model


def build_training_assets(settings: ProjectSettings) -> list:
    builders = (
        build_churn_labels,
        build_training_dataset,
        build_sklearn_model,
        build_hgb_model,
        build_mlp_model,
        build_ensemble_model,
        build_candidate_model,
        build_champion_model,
    )
    return [build(settings) for build in builders]
