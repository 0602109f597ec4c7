"""The ``sidestream`` command line: the outermost layer. Nothing imports this package."""
