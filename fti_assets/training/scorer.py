"""The serving code of a churn model, stored with every model version (MLflow "models from code").

Self-contained on purpose: it imports no project module, so inference loads a model from the
registry without importing the training pipeline. Artifacts: ``model.json`` (kind, feature order,
threshold) and ``sklearn.pkl`` or ``mlp.pt``.
"""

import json
import pickle

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def build_network(n_features: int, hidden: list[int]):
    """The MLP both training and serving build: Linear/ReLU blocks and one logit."""
    import torch

    layers, width = [], n_features
    for size in hidden:
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


class ChurnScorer(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["model_json"]) as f:
            self.spec = json.load(f)
        self.features = self.spec["features"]
        if self.spec["kind"] == "sklearn":
            with open(context.artifacts["weights"], "rb") as f:
                self.estimator = pickle.load(f)
        else:
            import torch

            state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
            self.network = build_network(len(self.features), self.spec["hidden"])
            self.network.load_state_dict(state["network"])
            self.network.eval()
            self.mean, self.scale = state["mean"].numpy(), state["scale"].numpy()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Churn probabilities, one per row, from the feature columns (missing values count as 0)."""
        return self.predict_matrix(model_input[self.features].astype("float64").to_numpy())

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """``predict`` on a float64 matrix whose columns are ``self.features`` in order (NaN counts as 0).

        The online service calls this: a one-row DataFrame costs more than scoring it.
        """
        x = np.where(np.isnan(x), 0.0, x)
        if self.spec["kind"] == "sklearn":
            return self.estimator.predict_proba(x)[:, 1]
        import torch

        with torch.no_grad():
            logits = self.network(torch.as_tensor((x - self.mean) / self.scale, dtype=torch.float32))
        return torch.sigmoid(logits).squeeze(1).numpy().astype("float64")


mlflow.models.set_model(ChurnScorer())
