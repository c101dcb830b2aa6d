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
