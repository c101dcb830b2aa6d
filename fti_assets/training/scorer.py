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
            self.linear = _scaled_logistic(self.estimator)
        else:
            import torch

            state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
            self.network = build_network(len(self.features), self.spec["hidden"])
            self.network.load_state_dict(state["network"])
            self.network.eval()
            self.mean, self.scale = state["mean"].numpy(), state["scale"].numpy()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Churn probabilities, one per row, from the feature columns (missing values count as 0)."""
        # Row-major like the service's matrix: the same summation order, so batch and online scores agree bit for bit.
        return self.predict_matrix(
            np.ascontiguousarray(model_input[self.features].to_numpy(dtype="float64", na_value=np.nan))
        )

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """``predict`` on a float64 matrix whose columns are ``self.features`` in order (NaN counts as 0).

        The online service calls this: a one-row DataFrame costs more than scoring it.
        """
        x = np.where(np.isnan(x), 0.0, x)
        if self.spec["kind"] == "sklearn":
            if self.linear is None:
                return self.estimator.predict_proba(x)[:, 1]
            # predict_proba's own arithmetic, without its per-call input checks (most of a one-row call).
            from scipy.special import expit

            mean, scale, coef, intercept = self.linear
            return expit(((x - mean) / scale @ coef.T + intercept).ravel())
        import torch

        with torch.no_grad():
            logits = self.network(torch.as_tensor((x - self.mean) / self.scale, dtype=torch.float32))
        return torch.sigmoid(logits).squeeze(1).numpy().astype("float64")


def _scaled_logistic(estimator):
    """(mean, scale, coef, intercept) of a fitted StandardScaler + binary LogisticRegression pipeline, else None."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        return None
    scaler, model = (step for _, step in estimator.steps)
    if type(scaler) is not StandardScaler or type(model) is not LogisticRegression or model.coef_.shape[0] != 1:
        return None
    mean = scaler.mean_ if scaler.with_mean else 0.0
    scale = scaler.scale_ if scaler.with_std else 1.0
    return mean, scale, model.coef_, model.intercept_


mlflow.models.set_model(ChurnScorer())
