"""``sidestream bench``: every benchmark, one scoreboard (see :mod:`devtools.bench.harness`)."""
