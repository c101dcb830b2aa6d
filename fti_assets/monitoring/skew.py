"""Training-serving skew: do the online store and the offline point-in-time join agree, entity by entity?"""

import numpy as np
import pandas as pd


def value_mismatches(offline: pd.DataFrame, online: pd.DataFrame, key: str, features: list[str]) -> pd.DataFrame:
    """(key, feature, offline, online) for every value that differs; a missing value differs from a present one."""
    joined = offline[[key, *features]].merge(online[[key, *features]], on=key, how="left", suffixes=("_off", "_on"))
    rows = []
    for feature in features:
        off = pd.to_numeric(joined[f"{feature}_off"], errors="coerce").to_numpy(dtype="float64")
        on = pd.to_numeric(joined[f"{feature}_on"], errors="coerce").to_numpy(dtype="float64")
        both_missing = np.isnan(off) & np.isnan(on)
        differs = ~both_missing & ~np.isclose(off, on, rtol=1e-9, atol=1e-9, equal_nan=True)
        for i in np.flatnonzero(differs):
            rows.append({key: joined[key].iat[i], "feature": feature, "offline": off[i], "online": on[i]})
    return pd.DataFrame(rows, columns=[key, "feature", "offline", "online"])
