"""What every command gets from the global flags."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Options"]


@dataclass(frozen=True, slots=True)
class Options:
    """``--storage`` (None: ``$EVFLOW_STORAGE``, else ``./.evflow``) and ``--json``."""

    storage: str | None
    json: bool
