"""Turn the ``storage`` argument of ``Engine`` and the tools into a ``Store``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from ._base import Store

__all__ = ["DEFAULT_STORAGE", "open_store"]

#: Where the embedded file store lives when neither ``storage`` nor ``$EVFLOW_STORAGE`` says.
DEFAULT_STORAGE = "./.evflow"

_SCHEMES = "a path, 'file://PATH', 'memory://', 'postgresql://...' or a Store instance"


def open_store(
    storage: str | os.PathLike[str] | Store | None,
    *,
    durability: Literal["strict", "relaxed"] = "strict",
    read_only: bool = False,
) -> Store:
    """The store named by ``storage`` (not yet opened).

    None means ``$EVFLOW_STORAGE``, else ``./.evflow``. Raises ``ValueError`` naming the
    accepted schemes for anything else.
    """
    if isinstance(storage, Store):
        return storage
    if storage is None:
        storage = os.environ.get("EVFLOW_STORAGE") or DEFAULT_STORAGE
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if not isinstance(storage, str):
        raise TypeError(f"storage must be {_SCHEMES}, not {type(storage).__name__}")
    if not storage:
        raise ValueError(f"storage must not be empty; use {_SCHEMES}")
    scheme = urlparse(storage).scheme.lower() if "://" in storage else ""
    if scheme == "":
        from .file import FileStore

        return FileStore(Path(storage), durability=durability, read_only=read_only)
    if scheme == "file":
        from .file import FileStore

        parsed = urlparse(storage)
        path = unquote(parsed.netloc + parsed.path)
        return FileStore(Path(path), durability=durability, read_only=read_only)
    if scheme == "memory":
        from ._memory import MemoryStore

        return MemoryStore()
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(storage, read_only=read_only)
    raise ValueError(f"unknown storage scheme {scheme!r} in {storage!r}; accepted: {_SCHEMES}")
