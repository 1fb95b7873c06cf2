"""Importing the user's step modules (``--import MODULE``) for the commands that run code."""

from __future__ import annotations

import importlib
import os
import sys

from ._format import warn

__all__ = ["import_modules"]


def import_modules(modules: list[str] | None) -> bool:
    """Import the user's modules (the current directory first on ``sys.path``, as
    ``python -m`` has it); False, with one line on stderr each, when one fails."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    ok = True
    for module in modules or ():
        try:
            importlib.import_module(module)
        except Exception as exc:  # the user's module may raise anything while importing
            warn(f"error: cannot import {module}: {type(exc).__name__}: {exc}")
            ok = False
    return ok
