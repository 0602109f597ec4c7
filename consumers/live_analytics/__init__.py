"""Live analytics: per-tenant windows of event counts on event time, with faust.

Flow of one event: analytics/audit topic → faust agent (`LiveProcessor`) → +1 in the
tenant's one-minute (tumbling) and five-minute (hopping, every minute) windows and its
action window, all changelog-backed faust tables → when the partition's stream time makes
a window final: the spike detector (`AnalyticsAlert` on the alerts topic) and an upsert of
the final counts into ``live_window_counts``. faust's web server shows the open windows
(``/live/...``). Counts are at least once; ``analytics_hourly`` stays the exact figure.

Run it with `run_live_analytics` (``sidestream worker run live-analytics``).
"""

from consumers.live_analytics.app import LiveAnalyticsApp, build_live_app, internal_topics
from consumers.live_analytics.codec import AvroEventCodec, Undecodable
from consumers.live_analytics.embedded import EmbeddedLiveAnalytics
from consumers.live_analytics.errors import (
    LiveAnalyticsError,
    SnapshotWriteError,
    TopicLayoutError,
)
from consumers.live_analytics.options import DEFAULT_APP_ID, LiveAnalyticsOptions
from consumers.live_analytics.snapshot import SnapshotWriter, WindowCount
from consumers.live_analytics.spikes import RATE_SPIKE, SpikeRule
from consumers.live_analytics.windows import HOPPING_5M, TUMBLING_1M, WindowSpec
from consumers.live_analytics.worker import resolve_topics, run_live_analytics

__all__ = [
    "DEFAULT_APP_ID",
    "HOPPING_5M",
    "RATE_SPIKE",
    "TUMBLING_1M",
    "AvroEventCodec",
    "EmbeddedLiveAnalytics",
    "LiveAnalyticsApp",
    "LiveAnalyticsError",
    "LiveAnalyticsOptions",
    "SnapshotWriteError",
    "SnapshotWriter",
    "SpikeRule",
    "TopicLayoutError",
    "Undecodable",
    "WindowCount",
    "WindowSpec",
    "build_live_app",
    "internal_topics",
    "resolve_topics",
    "run_live_analytics",
]
