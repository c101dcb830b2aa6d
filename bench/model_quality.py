"""The project's churn models against the classical customer-lifetime model (BG/NBD) and recency alone.

    python bench/model_quality.py [--seeds 3] [--sim-customers 2000 10000] [--sim-days 365]
                                  [--only online_retail|simulated]

Needs the bench extra (`pip install -e '.[bench]'`: the `lifetimes` package for BG/NBD).

Data sets: the shipped Online Retail II sample (configs/online_retail.yaml) and the simulator at
configs/simulated.yaml's settings with 2,000 and 10,000 customers (how a margin grows with the data: the
Online Retail sample has 999 customers on its as-of day) over a year of days (`--sim-days`; the demo's 180
days leave 80 days of settled train labels before a test day 130 days in); only the settings differ, never
the code. Each goes
through the project's own pure functions: standardized transactions -> customer features (the columns of
the feature service) -> churn labels -> the time split (train days whose labels reach validation purged)
with the train stride -> the candidate models with their asset configs' defaults (the three trained ones
and the ensemble of some of them), the champion being the best on validation PR-AUC (as candidate_model).
The point-in-time join is a plain join on (customer, day): a feature row's time is the label's time.

Everyone is judged on the same rows: the customers of the population on the first day of the test split,
with their labels (no purchase in the horizon after that day).
- models: each kind (the ensemble: the mean of the members it picked on validation), and the champion, score
  those rows' features;
- BG/NBD: fitted on every customer's purchase days up to that day (frequency = repeat purchase days,
  recency = first to last purchase day, T = first purchase day to the as-of day, in days). Two scores:
  P(no purchase in the horizon) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+h))^(r+x), which is the
  label's own event, and minus the expected purchases in the horizon (ranked as the issue measured it);
- recency: days since the last purchase, alone;
- on the simulator, the ceiling: the Bayes posterior of the label under the simulator's own process, given
  what the models see of a customer (the purchase log and the signup day; the segment is averaged over, as
  the models do not have it). No model of those inputs beats it on average: the gap from a champion to it is
  what is left to learn, the gap from BG/NBD to it what BG/NBD's assumptions cost.
ROC-AUC and PR-AUC (churn = positive) over model seeds (and, for the simulator, data seeds): mean, standard
deviation, min and max. "champion - best baseline" is per run, paired on the same rows; its bootstrap
standard error (customers resampled) says how much of it one day's sample of customers could explain.
Benchmarks report, they do not assert.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The libraries' deprecation notices would bury the table.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*is currently in beta.*")

from fti_assets.features.spec import BUILT_IN_SERVICES, DEFAULT_SERVICES  # noqa: E402
from fti_assets.features.transform import compute_customer_features  # noqa: E402
from fti_assets.ingestion.standardize import (  # noqa: E402
    customers_from_transactions,
    standardize_customers,
    standardize_transactions,
)
from fti_assets.settings import PROJECT_ROOT, ProjectSettings, load_settings  # noqa: E402
from fti_assets.training.assets.candidates import EnsembleConfig, HgbConfig, MlpConfig, SklearnConfig  # noqa: E402
from fti_assets.training.dataset import assign_split, dataset_rows, split_by_time  # noqa: E402
from fti_assets.training.labels import compute_churn_labels, label_days  # noqa: E402
from fti_assets.training.models import best_average, train_hgb, train_mlp, train_sklearn_baseline  # noqa: E402

BOOTSTRAP = 200
CEILING = "ceiling: Bayes posterior of the simulator's process"
# The feature services of the embedded settings: customer_churn_v1, and v2 (whole history, purchase days,
# largest purchase, gaps, trend).
FEATURE_SETS = {
    name.rsplit("_", 1)[-1]: service.features for name, service in {**BUILT_IN_SERVICES, **DEFAULT_SERVICES}.items()
}


def source_frames(settings: ProjectSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(standardized transactions, customers) of the settings' source over their date range."""
    now = pd.Timestamp.now(tz="UTC")
    day_range = (settings.start_date, settings.end_exclusive)
    if settings.simulator is not None:
        from fti_assets.demo import simulated_source

        simulated = simulated_source(settings)
        raw, customers = simulated.transactions, simulated.customers
    else:
        from fti_assets.resources.source import SourceResource

        source = SourceResource(path=settings.source.path, columns=settings.source.columns, timezone="UTC")
        raw, customers = source.read_transactions(*day_range), None
    batch = standardize_transactions(raw, settings.source.columns, settings.source.timezone, now, day_range)
    transactions = batch.accepted
    if customers is None:
        customers = customers_from_transactions(transactions)
    else:
        customers = standardize_customers(customers, settings.source.customers, settings.source.timezone)
    return transactions, customers


def prepare(settings: ProjectSettings) -> dict:
    """Per feature set, the training dataset of the project's path; and the evaluation day."""
    transactions, customers = source_frames(settings)
    last_day = pd.to_datetime(transactions["day"]).max().date()
    first, labelled_end = label_days(settings.start_date, settings.end_exclusive, settings.label_horizon_days, last_day)
    tz = settings.source.timezone
    labels = compute_churn_labels(
        transactions, first, labelled_end, settings.active_window_days, settings.label_horizon_days, tz
    )
    days = labels["as_of_day"].unique().tolist()
    split = settings.split
    periods = split_by_time(days, split.validation_days, split.test_days, settings.label_horizon_days)
    labels = labels[dataset_rows(labels, periods, split.train_stride_days)].copy()
    labels["split"] = assign_split(labels["as_of_day"], periods)
    rows = {}
    for name, spec in FEATURE_SETS.items():
        # The whole log is in memory: every feature set reads all of it before each day (history_start).
        features = compute_customer_features(
            transactions, customers, first, labelled_end, settings.active_window_days, tz, spec
        ).drop(columns="event_timestamp")
        joined = labels.merge(features, on=["customer_id", "as_of_day"], how="left")
        joined[spec.columns] = joined[spec.columns].astype("float64").fillna(0.0)
        rows[name] = joined
    as_of = periods.test[0]
    return {"rows": rows, "as_of": as_of, "transactions": transactions, "customers": customers, "periods": periods}


def evaluation_rows(data: dict, feature_set: str) -> pd.DataFrame:
    rows = data["rows"][feature_set]
    return rows[rows["as_of_day"] == data["as_of"]].reset_index(drop=True)


def split(rows: pd.DataFrame, name: str, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    part = rows[rows["split"] == name]
    return part[columns].to_numpy("float64"), part["churned"].to_numpy()


def model_scores(data: dict, feature_set: str, seed: int, out_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """Each candidate kind's scores on the evaluation rows, and the champion's (best validation PR-AUC)."""
    from sklearn.metrics import average_precision_score

    columns, rows = FEATURE_SETS[feature_set].columns, data["rows"][feature_set]
    x, y = split(rows, "train", columns)
    xv, yv = split(rows, "validation", columns)
    sk, hgb, mlp = SklearnConfig(), HgbConfig(), MlpConfig()
    models = [
        train_sklearn_baseline(x, y, columns, out_dir / "sklearn", seed=seed, c=sk.c),
        train_hgb(x, y, xv, yv, columns, out_dir / "hgb", **{**hgb.model_dump(), "seed": seed}),
        train_mlp(
            x,
            y,
            xv,
            yv,
            columns,
            out_dir / "mlp",
            seed=seed,
            device="cpu",
            hidden=mlp.hidden,
            max_epochs=mlp.max_epochs,
            patience=mlp.patience,
            batch_size=mlp.batch_size,
            learning_rate=mlp.learning_rate,
        ),
    ]
    ensemble, _ = best_average(models, xv, yv, out_dir / "ensemble", seed=EnsembleConfig().seed)
    models.append(ensemble)
    champion = max(models, key=lambda m: average_precision_score(yv, m.predict(xv)))
    evaluation = evaluation_rows(data, feature_set)[columns].to_numpy("float64")
    scores = {f"{m.kind} ({feature_set})": m.predict(evaluation) for m in models}
    scores[f"champion ({feature_set})"] = scores[f"{champion.kind} ({feature_set})"]
    name = champion.kind if champion is not ensemble else f"ensemble {ensemble.params['members']}"
    return scores, name


def bgnbd_scores(transactions: pd.DataFrame, as_of: str, customers: pd.Series, horizon: int) -> dict[str, np.ndarray]:
    """BG/NBD fitted on the purchase days up to ``as_of``; churn scores of ``customers``."""
    from lifetimes import BetaGeoFitter

    days = transactions.loc[transactions["day"] <= as_of, ["customer_id", "day"]].drop_duplicates()
    days["day"] = pd.to_datetime(days["day"])
    per_customer = days.groupby("customer_id")["day"].agg(["min", "max", "count"])
    frequency = (per_customer["count"] - 1).astype("float64")
    recency = (per_customer["max"] - per_customer["min"]).dt.days.astype("float64")
    age = (pd.Timestamp(as_of) - per_customer["min"]).dt.days.astype("float64")
    # lifetimes' default (no penalty): a penalty pulls a and b towards 0, where its expected-purchases formula
    # returns NaN on the Online Retail sample.
    fitter = BetaGeoFitter(penalizer_coef=0.0).fit(frequency, recency, age)
    r, alpha = fitter.params_["r"], fitter.params_["alpha"]
    alive = pd.Series(fitter.conditional_probability_alive(frequency, recency, age), index=per_customer.index)
    none = 1 - alive + alive * ((alpha + age) / (alpha + age + horizon)) ** (r + frequency)
    expected = pd.Series(
        fitter.conditional_expected_number_of_purchases_up_to_time(horizon, frequency, recency, age),
        index=per_customer.index,
    )
    ids = customers.astype(str)
    return {
        "BG/NBD P(no purchase)": none.reindex(ids).to_numpy(),
        "BG/NBD -E[purchases]": -expected.reindex(ids).to_numpy(),
    }


def simulator_posterior(data: dict, settings: ProjectSettings, ids: pd.Series) -> np.ndarray:
    """P(no purchase in the horizon after ``data['as_of']``) for each customer of ``ids``, under the process
    that `fti_assets.simulate.generator` draws from, given the customer's transactions up to that day and
    signup day.

    The simulator draws a segment, then a purchase rate (gamma per segment) and a daily churn hazard that
    falls with the rate; from max(signup, start) the customer buys Poisson(rate x weekday weight) a day
    until the churn day, then never again. The posterior sums over the segment, a grid of rates and every
    churn day the log allows (after the last purchase, up to the as-of day, or later: still active)."""
    from scipy import stats

    from fti_assets.simulate import generator

    simulator = settings.simulator
    if simulator.drift is not None:
        raise ValueError("the posterior follows the simulator without drift")
    start, horizon = pd.Timestamp(simulator.start), settings.label_horizon_days
    as_of = (pd.Timestamp(data["as_of"]) - start).days
    weights = generator.WEEKLY_PATTERN[(start.weekday() + np.arange(as_of + horizon + 1)) % 7]
    before = np.concatenate([[0.0], np.cumsum(weights)])  # before[t]: expected purchases of days < t at rate 1
    transactions = data["transactions"]
    logged = transactions[transactions["day"] <= data["as_of"]]
    per_customer = (
        pd.DataFrame({"id": logged["customer_id"].astype(str), "day": (pd.to_datetime(logged["day"]) - start).dt.days})
        .groupby("id")["day"]
        .agg(["count", "max"])
        .reindex(ids.astype(str))
    )
    signup = data["customers"].assign(customer_id=data["customers"]["customer_id"].astype(str))
    signup = pd.to_datetime(signup.set_index("customer_id")["signup_date"].reindex(ids.astype(str)))
    exposed_from = np.maximum((signup.dt.tz_localize(None) - start).dt.days.to_numpy(), 0)
    rate = np.geomspace(1e-4, 5.0, 400)  # the latent rate the segment draws; purchases come at `buying`
    buying = rate * simulator.purchase_rate_multiplier
    segments = []
    for s, share in enumerate(generator.SEGMENT_WEIGHTS):
        mean, shape = generator.RATE_MEAN[s], generator.RATE_SHAPE[s]
        prior = share * stats.gamma.pdf(rate, shape, scale=mean / shape) * rate  # per log-rate step
        hazard = generator.BASE_HAZARD[s] * np.clip(np.sqrt(mean / rate), 0.25, 4.0)
        # P(no purchase in the horizon | active on the as-of day): churn on day as_of+k, none before it.
        k = np.arange(1, horizon + 1)
        survive = np.exp(-hazard[None, :] * (k - 1)[:, None]) * -np.expm1(-hazard)[None, :]
        none = (survive * np.exp(-buying[None, :] * (before[as_of + k] - before[as_of + 1])[:, None])).sum(0)
        none += np.exp(-hazard * horizon - buying * (before[as_of + horizon + 1] - before[as_of + 1]))
        segments.append((prior, hazard, none))
    scores = np.empty(len(ids))
    logs = zip(per_customer["count"], per_customer["max"], exposed_from, strict=True)
    for i, (count, last, first) in enumerate(logs):
        churn_days = np.arange(max(int(last) + 1, first), as_of + 1)
        exposure, days_active = before[as_of + 1] - before[first], as_of - first + 1
        terms = []
        for prior, hazard, none in segments:
            # log P(log | rate, churn day) up to a constant, for churn on each possible day, and for still active
            churned = (
                count * np.log(buying)[None, :]
                - buying[None, :] * (before[churn_days] - before[first])[:, None]
                - hazard[None, :] * (churn_days - first)[:, None]
                + np.log(-np.expm1(-hazard))[None, :]
            )
            active = count * np.log(buying) - buying * exposure - hazard * days_active
            terms.append((prior, churned, active, none))
        top = max(max(t[1].max(initial=-np.inf), t[2].max()) for t in terms)
        gone = alive = alive_none = 0.0
        for prior, churned, active, none in terms:
            gone += (np.exp(churned - top).sum(0) * prior).sum()
            weight = np.exp(active - top) * prior
            alive += weight.sum()
            alive_none += (weight * none).sum()
        scores[i] = (gone + alive_none) / (gone + alive)
    return scores


def auc_pair(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


def bootstrap_se(y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """Standard errors of (ROC-AUC, PR-AUC) of a minus b, customers resampled with replacement."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(y), len(y))
        if len(np.unique(y[pick])) < 2:
            continue
        ra, pa = auc_pair(y[pick], a[pick])
        rb, pb = auc_pair(y[pick], b[pick])
        diffs.append((ra - rb, pa - pb))
    spread = np.std(diffs, axis=0)
    return float(spread[0]), float(spread[1])


def evaluate(data: dict, settings: ProjectSettings, seed: int, out_dir: Path) -> list[dict]:
    """Every method's ROC-AUC and PR-AUC on the evaluation rows, and each champion's margin over the best
    baseline with its bootstrap standard error."""
    evaluation = evaluation_rows(data, "v1")
    y = evaluation["churned"].to_numpy()
    scores, champion_kinds = {}, {}
    for feature_set in FEATURE_SETS:
        # The same customers and labels whatever the features: the population is the labels'.
        assert evaluation_rows(data, feature_set)["customer_id"].equals(evaluation["customer_id"])
        set_scores, champion_kinds[feature_set] = model_scores(data, feature_set, seed, out_dir / feature_set)
        scores.update(set_scores)
    scores.update(
        bgnbd_scores(data["transactions"], data["as_of"], evaluation["customer_id"], settings.label_horizon_days)
    )
    scores["recency (days since last purchase)"] = evaluation["days_since_last_purchase"].to_numpy()
    if settings.simulator is not None:
        scores[CEILING] = simulator_posterior(data, settings, evaluation["customer_id"])
    results = []
    for name, score in scores.items():
        roc_auc, pr_auc = auc_pair(y, score)
        results.append({"method": name, "roc_auc": roc_auc, "pr_auc": pr_auc})
    baselines = [r for r in results if r["method"].startswith(("BG/NBD", "recency"))]
    best_roc = max(baselines, key=lambda r: r["roc_auc"])
    best_pr = max(baselines, key=lambda r: r["pr_auc"])
    for feature_set, kind in champion_kinds.items():
        champion = next(r for r in results if r["method"] == f"champion ({feature_set})")
        results.append(
            {
                "method": f"champion ({feature_set}) - best baseline",
                "roc_auc": champion["roc_auc"] - best_roc["roc_auc"],
                "pr_auc": champion["pr_auc"] - best_pr["pr_auc"],
                "roc_se": bootstrap_se(y, scores[champion["method"]], scores[best_roc["method"]], seed)[0],
                "pr_se": bootstrap_se(y, scores[champion["method"]], scores[best_pr["method"]], seed)[1],
                "champion_kind": kind,
            }
        )
    return results


def table(name: str, settings: ProjectSettings, data: dict, runs: list[list[dict]], seconds: float) -> str:
    evaluation = evaluation_rows(data, "v1")
    train_rows = int((data["rows"]["v1"]["split"] == "train").sum())
    frame = pd.DataFrame([{**r, "run": i} for i, run in enumerate(runs) for r in run])
    margins = frame[frame["method"].str.endswith("- best baseline")]
    lines = [
        f"\n## {name}: as of {data['as_of']} (first test day), {len(evaluation)} customers, churn rate "
        f"{evaluation['churned'].mean():.3f}, horizon {settings.label_horizon_days} days; {len(runs)} runs; "
        f"train rows {train_rows:,}; {seconds:.0f} s",
        "",
        "| method | ROC-AUC mean | sd | min | max | PR-AUC mean | sd | min | max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(frame["method"]):
        part = frame[frame["method"] == method]
        roc, pr = part["roc_auc"], part["pr_auc"]
        lines.append(
            f"| {method} | {roc.mean():+.4f} | {roc.std(ddof=0):.4f} | {roc.min():+.4f} | {roc.max():+.4f} "
            f"| {pr.mean():+.4f} | {pr.std(ddof=0):.4f} | {pr.min():+.4f} | {pr.max():+.4f} |"
        )
    lines.append("")
    for method, part in margins.groupby("method", sort=False):
        lines.append(
            f"{method}: bootstrap standard error over customers (mean over runs) ROC-AUC {part['roc_se'].mean():.4f}, "
            f"PR-AUC {part['pr_se'].mean():.4f}; champion picks {part['champion_kind'].value_counts().to_dict()}"
        )
    return "\n".join(lines)


def run_online_retail(seeds: list[int], work: Path) -> str:
    started = time.perf_counter()
    settings = load_settings(PROJECT_ROOT / "configs" / "online_retail.yaml", data_dir=str(work / "online_retail"))
    data = prepare(settings)
    runs = [evaluate(data, settings, seed, work / f"online_retail-{seed}") for seed in seeds]
    return table("Online Retail II sample", settings, data, runs, time.perf_counter() - started)


def run_simulated(seeds: list[int], customers: int, days: int, work: Path) -> str:
    started = time.perf_counter()
    runs, data, settings = [], None, None
    simulator = load_settings(PROJECT_ROOT / "configs" / "simulated.yaml").simulator
    for data_seed in seeds:
        settings = load_settings(
            PROJECT_ROOT / "configs" / "simulated.yaml",
            data_dir=str(work / f"simulated-{data_seed}"),
            simulator={**simulator.model_dump(), "n_customers": customers, "days": days, "seed": data_seed},
            end_date=simulator.start + timedelta(days=days - 1),
        )
        data = prepare(settings)
        runs += [evaluate(data, settings, seed, work / f"simulated-{data_seed}-{seed}") for seed in seeds]
    name = f"Simulator ({customers} customers x {days} days, data seeds {seeds} x model seeds {seeds})"
    return table(name, settings, data, runs, time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="model seeds (and simulator data seeds)")
    parser.add_argument("--sim-customers", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--sim-days", type=int, nargs="+", default=[365], help="days of simulated purchase log")
    parser.add_argument("--only", choices=["online_retail", "simulated"])
    args = parser.parse_args()
    try:
        import lifetimes  # noqa: F401
    except ImportError:
        print("bench/model_quality.py needs the `lifetimes` package for BG/NBD: pip install -e '.[bench]'")
        return 2
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only != "simulated":
            print(run_online_retail(seeds, work), flush=True)
        if args.only != "online_retail":
            for days in args.sim_days:
                for customers in args.sim_customers:
                    print(run_simulated(seeds, customers, days, work), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
