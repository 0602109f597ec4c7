"""The demo (``sidestream demo``, ``make demo``): the whole platform on the local stack,
then a summary.

Steps: start the stack → migrate → create topics → start the reference API and every
worker as real processes → drive a mixed workload against the API (writes go through
the transactional outbox, reads through the cache) and publish events directly (plus a
few poison records) → wait until every event has landed → print what happened → stop
what the demo started.

One module per part: :mod:`~devtools.demo.run` (the steps in order),
:mod:`~devtools.demo.processes` (the processes it starts and stops),
:mod:`~devtools.demo.catchers` (the local mail catcher and webhook receiver),
:mod:`~devtools.demo.workload` (the API workload and the events published directly),
:mod:`~devtools.demo.landing` (rows landed and lag), :mod:`~devtools.demo.observed`
(figures scraped from /metrics) and :mod:`~devtools.demo.summary` (what it prints).
"""

from devtools.demo.catchers import PortZeroController
from devtools.demo.processes import DemoError
from devtools.demo.run import run_demo

__all__ = ["DemoError", "PortZeroController", "run_demo"]
