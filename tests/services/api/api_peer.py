"""The API as its own OS process, as ``sidestream api`` runs it (a script, not collected).

api_peer.py PORT SCHEMA NAMESPACE [--topic SUBJECT=TOPIC ...] [--no-l1] [--quiet]
            [--no-direct-invalidation]
    Settings come from the SIDESTREAM_* environment; logs are JSON lines on stderr
    (``--quiet``: no access log).
"""

from __future__ import annotations

import argparse
import sys

from runtime import configure_logging, load_settings
from runtime.ports import announce_ready
from services.api import ApiConfig, serve


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("schema")
    parser.add_argument("namespace")
    parser.add_argument("--topic", action="append", default=[])
    parser.add_argument("--no-l1", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-direct-invalidation", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging("INFO", "json")
    announce_ready(settings.ready_file)  # PORT 0: the bound port goes to the ready file
    config = ApiConfig(
        schema=args.schema,
        cache_namespace=args.namespace,
        topics=dict(item.split("=", 1) for item in args.topic),
        view_events=False,
        rate_limit=None,
        l1_ttl_s=None if args.no_l1 else 2.0,
        access_log=not args.quiet,
        invalidate_on_write=not args.no_direct_invalidation,
    )
    serve(settings, "127.0.0.1", args.port, config=config)


if __name__ == "__main__":
    main(sys.argv[1:])
