"""Developer tooling: what builds, checks and exercises the platform, never what runs it.

Workers and the API never import this package; the ``sidestream`` CLI imports it lazily,
only for the commands that need it, so a production install without the ``dev`` extra
still runs every worker and the API.

- :mod:`devtools.deploy`: offline validation of ``deploy/`` (``sidestream deploy check``).
"""
