"""The ``evflow`` command line (console script ``evflow`` and ``python -m evflow``).

See docs/cli.md for every command, flag, exit code and JSON shape.
"""

from ._main import main as main

__all__ = ["main"]
