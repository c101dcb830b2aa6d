"""Settings: the embedded default, the real-sample file, and clear errors for bad values."""

import pytest
from pydantic import ValidationError

from fti_assets.settings import DEFAULT_CONFIG, PROJECT_ROOT, load_settings


def test_default_settings_point_at_the_simulated_source_under_the_data_folder(tmp_path):
    settings = load_settings(DEFAULT_CONFIG, data_dir=str(tmp_path))
    assert settings.source_url == f"sqlite:///{tmp_path}/source.db"
    assert settings.source.columns.transaction_id == ["txn_id"]
    assert settings.end_exclusive.isoformat() == "2026-06-30"


def test_real_sample_settings_map_its_own_columns():
    settings = load_settings(PROJECT_ROOT / "configs" / "online_retail.yaml")
    assert settings.source.columns.customer_id == "Customer ID"
    assert settings.source.columns.transaction_id == ["Invoice", "StockCode"]
    assert settings.source.path.endswith("online_retail_ii_sample.csv")


def test_environment_url_wins_over_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FTI_SOURCE_URL", "postgresql://db/retail")
    assert load_settings(DEFAULT_CONFIG, data_dir=str(tmp_path)).source_url == "postgresql://db/retail"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"end_date": "2025-01-01"}, "before start_date"),
        ({"label_horizon_days": 0}, "label_horizon_days"),
        ({"unknown_key": 1}, "unknown_key"),
        # Feature services only add versions: v1 is fixed, views are never shared, training reads a known one.
        ({"feature_services": {"customer_churn_v1": {"view": "customer_activity_v1"}}}, "customer_churn_v1 is fixed"),
        ({"feature_services": {"customer_churn_v3": {"view": "customer_activity_v1"}}}, "a feature view of its own"),
        ({"feature_service": "customer_churn_v9"}, "customer_churn_v9"),
        ({"feature_services": {"v3": {"view": "v3", "features": {"windows": ["all", 0]}}}}, "windows"),
    ],
)
def test_bad_settings_name_the_key(override, message, tmp_path):
    with pytest.raises(ValidationError, match=message):
        load_settings(DEFAULT_CONFIG, data_dir=str(tmp_path), **override)


def test_bad_time_zone_and_missing_file_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("timezone: UTC", "timezone: Mars/Olympus"))
    with pytest.raises(Exception, match="Mars/Olympus"):
        load_settings(bad)
    with pytest.raises(FileNotFoundError, match="FTI_CONFIG"):
        load_settings(tmp_path / "missing.yaml")


def test_declared_services_join_the_built_in_v1_in_one_feature_table(tmp_path):
    settings = load_settings(
        DEFAULT_CONFIG,
        data_dir=str(tmp_path),
        feature_services={"customer_churn_v3": {"view": "customer_activity_v3", "features": {"windows": [14]}}},
        feature_service="customer_churn_v3",
    )
    assert sorted(settings.all_feature_services) == ["customer_churn_v1", "customer_churn_v3"]
    columns = settings.feature_table_spec.columns
    assert {"spend_sum_7d", "spend_sum_90d", "spend_max_14d", "purchase_days_14d", "purchase_gap_mean_days"} <= set(
        columns
    )
    # The embedded default declares v2 and trains on it.
    default = load_settings(DEFAULT_CONFIG, data_dir=str(tmp_path))
    assert default.feature_service == "customer_churn_v2" and "spend_sum_all" in default.feature_table_spec.columns
