"""The write → invalidation pipeline as its own OS process (run as a script, not
collected): an outbox relay on SCHEMA and the invalidation consumer, until SIGTERM.

pipeline_peer.py SCHEMA ENTITY_TOPIC GROUP NAMESPACE
    Settings come from the SIDESTREAM_* environment. Prints READY once both run, and
    exits 0 when both drained.
"""

from __future__ import annotations

import sys
import threading

from producers import RelayConfig, run_relay
from runtime import configure_logging, load_settings, new_registry
from runtime.lifecycle import stop_on_signals
from services.invalidation_consumer import run_invalidation_worker


def main(argv: list[str]) -> int:
    schema, topic, group, namespace = argv
    settings = load_settings()
    configure_logging("WARNING", "console")
    stop = threading.Event()
    stop_on_signals(stop)
    relay = threading.Thread(
        target=run_relay,
        kwargs={
            "settings": settings,
            "stop": stop,
            "schema": schema,
            "registry": new_registry(),
            "config": RelayConfig(poll_interval_s=0.5),
        },
        name="relay",
        daemon=True,
    )
    relay.start()
    print("READY", flush=True)
    status = run_invalidation_worker(
        settings,
        stop=stop,
        registry=new_registry(),
        group_id=group,
        topics=[topic],
        schema=schema,
        namespace=namespace,
    )
    relay.join(30)
    return int(status) if not relay.is_alive() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
