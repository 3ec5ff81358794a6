"""The ``candleflow`` command line (typer + rich) and the managed local Prefect server.

The one part of the ``candleflow`` package that may import ``prefect``, ``flows`` or ``tasks`` —
lazily, inside commands, so that ``candleflow --help`` stays instant and bad input is rejected
before Prefect starts. ``main(argv=None)`` returns the exit code: 0 ok, 1 failed, 2 bad input,
130 cancelled.
"""

from candleflow.cli.app import app, main

__all__ = ["app", "main"]
