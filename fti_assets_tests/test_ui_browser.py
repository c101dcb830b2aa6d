"""The Dagster UI as a person uses it: Debian's chromium, driven by Playwright, against `dagster dev` on loopback.

Runs on the closed loop's instance (stable history, drift, held-back days, a retrain, released days), so
what the pages show is what `make demo-drift` then `make ui-drift` show. Bounded: every wait has a limit.
"""

import contextlib
import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterRunStatus, RunsFilter
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from fti_assets.monitoring.drift_gate import HeldBack
from fti_assets.settings import PROJECT_ROOT
from fti_assets_tests.processes import free_port, start, stop, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STARTUP_SECONDS = 180
RUN_SECONDS = 180


def chromium() -> str:
    path = os.environ.get("FTI_TEST_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        if os.environ.get("FTI_REQUIRE_SERVERS"):
            pytest.fail(f"FTI_REQUIRE_SERVERS is set but there is no chromium at {path} (scripts/services.sh browser)")
        pytest.skip(f"no chromium at {path}: scripts/services.sh browser installs Debian's")
    return path


@pytest.fixture(scope="module")
def ui(loop, tmp_path_factory):
    """`dagster dev` serving the loop's instance and settings on a free loopback port."""
    executable = chromium()
    settings, instance, *_ = loop
    config = tmp_path_factory.mktemp("ui") / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    port = free_port()
    log = config.parent / "dagster-dev.log"
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory, "FTI_CONFIG": str(config)}
    dagster = str(Path(sys.executable).parent / "dagster")
    server = start([dagster, "dev", "-h", "127.0.0.1", "-p", str(port)], env, log, cwd=PROJECT_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/server_info", server, log, timeout=STARTUP_SECONDS)
    except RuntimeError as error:
        stop(server)
        pytest.fail(f"dagster dev did not serve {base}: {error}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(60_000)
        yield base, page, loop
        browser.close()
    stop(server)


def open_page(page, url: str) -> None:
    page.goto(url)
    skip = page.get_by_role("button", name="Skip")  # Dagster's one-time newsletter prompt
    with contextlib.suppress(PlaywrightTimeout):  # shown once per browser profile, or not at all
        skip.click(timeout=5_000)


def metadata_value(page, label: str) -> str:
    """The value cell beside a metadata label on the page."""
    row = page.locator("tr", has=page.get_by_text(label, exact=True)).first
    return row.locator("td").nth(1).inner_text().strip()


def shown(name: str, labels: set[str]) -> bool:
    """The graph shortens long names in the middle ('featu…_definitions')."""
    return name in labels or any(
        "…" in label and name.startswith(label.split("…")[0]) and name.endswith(label.split("…")[1]) for label in labels
    )


def test_the_lineage_graph_shows_every_asset(ui):
    base, page, (settings, _, _, _, defs) = ui
    open_page(page, f"{base}/asset-groups")
    page.get_by_text("Global asset lineage").click()
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
    page.get_by_text("raw_transactions", exact=True).first.wait_for()
    names = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    # The groups expand one after another: the first node on the page is not the last.
    deadline = time.monotonic() + 20
    while True:
        labels = {line.strip() for line in page.locator("body").inner_text().splitlines()}
        missing = [name for name in names if not shown(name, labels)]
        if not missing or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    page.screenshot(path=str(Path(settings.data_dir) / "ui-lineage.png"))
    assert missing == []


def test_a_days_partition_page_shows_that_days_own_row_count(ui):
    base, page, (settings, *_) = ui
    day = "2026-03-15"
    rows = len(pd.read_parquet(settings.path("lake", "customer_features", f"{day}.parquet")))
    open_page(page, f"{base}/assets/customer_features?view=partitions&partition={day}")
    page.get_by_text("dagster/row_count", exact=True).wait_for()
    page.screenshot(path=str(Path(settings.data_dir) / "ui-partition.png"))
    assert metadata_value(page, "dagster/row_count").replace(",", "") == str(rows)


def test_a_held_back_day_shows_why(ui):
    """Not a crash: the day reads as missing, and its events say why, against which champion, with the report."""
    base, page, (settings, *_) = ui
    day = HeldBack(settings).days()[0]
    open_page(page, f"{base}/assets/churn_predictions?view=partitions&partition={day}")
    page.get_by_text("Latest materialization").first.wait_for()
    assert "Failed (0)" in page.locator("body").inner_text()
    open_page(page, f"{base}/assets/churn_predictions?view=events&partition={day}")
    page.get_by_text("Held back by the drift gate", exact=False).first.wait_for()
    page.screenshot(path=str(Path(settings.data_dir) / "ui-held-back.png"))
    text = page.locator("body").inner_text()
    assert f"{day}: drifted against champion v2" in text  # judged again when v2 became champion
    assert "drifted_share" in text and "champion_version" in text


def test_a_materialization_launched_by_clicking_succeeds(ui):
    base, page, (settings, instance, *_) = ui
    before = {r.run_id for r in instance.get_runs(RunsFilter(job_name="__ASSET_JOB"))}
    open_page(page, f"{base}/assets/raw_customers")
    page.locator("button", has_text="Materialize").first.click()
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        runs = [r for r in instance.get_runs(RunsFilter(job_name="__ASSET_JOB")) if r.run_id not in before]
        if runs and runs[0].status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            break
        assert time.monotonic() < deadline, f"no finished run {RUN_SECONDS} s after the click: {runs}"
        time.sleep(2)
    assert runs[0].status == DagsterRunStatus.SUCCESS
    record = instance.get_latest_materialization_event(AssetKey("raw_customers"))
    assert record.run_id == runs[0].run_id
