"""``python -m consumers.delivery``: one delivery worker process until SIGTERM/SIGINT.

The same worker as ``sidestream worker run notify``, for environments without the CLI
(and for tests that SIGKILL it). Settings come from ``SIDESTREAM_*``; ``--config`` takes
a JSON object of :class:`~consumers.delivery.config.DeliveryConfig` fields on top.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from consumers.delivery.config import DeliveryConfig
from consumers.delivery.process import run_notify_worker
from runtime import configure_logging, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumers.delivery", description=__doc__)
    parser.add_argument("--schema", help="Postgres schema (default: SIDESTREAM_POSTGRES_SCHEMA)")
    parser.add_argument("--config", default="{}", help="JSON object of DeliveryConfig fields")
    parser.add_argument("--dead-letter-topic", help="default: sidestream.notifications.dlq")
    parser.add_argument("--worker-id", help="default: <host>-<pid>-notify")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    overrides = json.loads(args.config)
    if not isinstance(overrides, dict):
        parser.error("--config must be a JSON object")
    config = DeliveryConfig.from_settings(settings).replace(**overrides)
    status = run_notify_worker(
        settings,
        stop=threading.Event(),
        schema=args.schema,
        config=config,
        dead_letter_topic=args.dead_letter_topic,
        worker_id=args.worker_id,
        install_signal_handlers=True,
    )
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
