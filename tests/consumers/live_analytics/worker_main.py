"""``python -m tests.consumers.live_analytics.worker_main OPTIONS_JSON``: the live analytics
worker as a child process, what ``sidestream worker run live-analytics`` will run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from consumers.live_analytics import LiveAnalyticsOptions, SpikeRule, run_live_analytics
from runtime import configure_logging, load_settings
from runtime.ports import announce_ready


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    announce_ready(settings.ready_file)  # the metrics port (0 = any) goes to the parent
    fields = json.loads(sys.argv[1])
    fields["spike"] = SpikeRule(**fields["spike"])
    fields["topics"] = tuple(fields["topics"]) if fields["topics"] else None
    fields["data_dir"] = Path(fields["data_dir"]) if fields["data_dir"] else None
    return int(run_live_analytics(settings, LiveAnalyticsOptions(**fields)))


if __name__ == "__main__":
    sys.exit(main())
