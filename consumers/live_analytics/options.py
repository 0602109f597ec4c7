"""What may differ between deployments (and tests) of the live analytics worker."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from consumers.live_analytics.spikes import SpikeRule

__all__ = ["DEFAULT_APP_ID", "LiveAnalyticsOptions"]

DEFAULT_APP_ID = "sidestream.live-analytics"
_STORES = ("memory", "rocksdb")


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveAnalyticsOptions:
    """Options of one worker; the defaults work against the local stack."""

    app_id: str = DEFAULT_APP_ID
    """faust app id: the consumer group, and the prefix of the changelog topics."""
    topics: tuple[str, ...] | None = None
    """Source topics (same partition count); default: the analytics and audit topics."""
    alerts_topic: str | None = None
    """Where `AnalyticsAlert` events go; default: its topic in ``topics.yaml``."""
    schema: str | None = None
    """Postgres schema of ``live_window_counts``; default: the configured one."""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    """faust's web server: the JSON views (``/live/...``) and ``/metrics``."""
    grace_s: float = 60.0
    """Allowed lateness: a window is final once the stream time is this far past its end.
    It must also cover how far apart the source topics are read (see `windows`)."""
    spike: SpikeRule = field(default_factory=SpikeRule)
    top_n: int = 10
    """Default length of the top-actions view (``?n=`` overrides it)."""
    store: str = "memory://"
    """faust table store: ``memory://`` (restored from the changelog on start) or
    ``rocksdb://`` (on disk under `data_dir`, through ``rocksdict``)."""
    data_dir: Path | None = None
    """faust's data directory; default: a folder per app id under the system temp dir."""
    commit_interval_s: float = 2.8
    """How often faust commits processed offsets (after flushing the changelog writes)."""
    producer_linger_s: float = 0.05
    """How long faust's producer holds changelog writes and alerts to batch them."""
    batch_max: int = 2000
    """Records per micro-batch at most (a fetch is cut into batches of this size): their
    counts are summed and each window written once per batch."""
    source_idle_s: float = 2.0
    """A source partition that delivered nothing this long after the agent resumed is taken
    as caught up: it no longer holds the partition's watermark back (see `processor`)."""
    standby_replicas: int = 1
    """Standby copies of each table partition kept by other workers, for fast failover."""
    replication_factor: int = 1
    """Replication factor of the changelog topics faust creates (3 on a real cluster)."""
    producer_name: str = "live-analytics"
    """The `producer` field of emitted alerts."""

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ValueError("app_id must not be empty")
        if not 1 <= self.web_port <= 65535:
            raise ValueError(f"web_port must be a TCP port (1-65535), got {self.web_port}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must not be negative, got {self.grace_s}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {self.top_n}")
        if self.store.partition("://")[0] not in _STORES:
            raise ValueError(f"store must be memory:// or rocksdb://, got {self.store!r}")
        if self.commit_interval_s <= 0:
            raise ValueError(f"commit_interval_s must be positive, got {self.commit_interval_s}")
        if self.producer_linger_s < 0:
            raise ValueError(
                f"producer_linger_s must not be negative, got {self.producer_linger_s}"
            )
        if self.batch_max < 1:
            raise ValueError(f"batch_max must be >= 1, got {self.batch_max}")
        if self.source_idle_s < 0:
            raise ValueError(f"source_idle_s must not be negative, got {self.source_idle_s}")
        if self.standby_replicas < 0 or self.replication_factor < 1:
            raise ValueError("standby_replicas must be >= 0 and replication_factor >= 1")
        if self.topics is not None and not self.topics:
            raise ValueError("topics must name at least one topic (or be None for the default)")

    @property
    def resolved_data_dir(self) -> Path:
        """`data_dir`, else a folder of this app id under the system temp directory."""
        if self.data_dir is not None:
            return self.data_dir
        return Path(tempfile.gettempdir()) / "sidestream-live-analytics" / self.safe_app_id

    @property
    def safe_app_id(self) -> str:
        """The app id as a file name (one data folder per app id)."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.app_id)
