"""``sidestream bench``: every benchmark, one scoreboard (see :mod:`sidestream.bench.harness`)."""
