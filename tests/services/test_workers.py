"""The worker registry's wiring of settings into a worker's options (pure)."""

from __future__ import annotations

from pathlib import Path

from runtime import load_settings
from services.workers import WorkerArgs, live_analytics_options


def test_live_analytics_keeps_its_tables_in_memory_by_default() -> None:
    options = live_analytics_options(load_settings({}), WorkerArgs("live-analytics"))
    assert options.store == "memory://"
    assert options.data_dir is None


def test_live_analytics_store_and_data_dir_come_from_the_settings_one_folder_per_app(
    tmp_path: Path,
) -> None:
    config = load_settings(
        {
            "SIDESTREAM_LIVE_ANALYTICS_STORE": "rocksdb",
            "SIDESTREAM_LIVE_ANALYTICS_DATA_DIR": str(tmp_path),
        }
    )
    first = live_analytics_options(config, WorkerArgs("live-analytics", group="app/one"))
    second = live_analytics_options(config, WorkerArgs("live-analytics", group="app-two"))
    assert first.store == second.store == "rocksdb://"
    assert first.data_dir == tmp_path / "app_one"
    assert second.data_dir == tmp_path / "app-two"
