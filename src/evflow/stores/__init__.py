"""Stores: where event logs live (memory, embedded file log, PostgreSQL)."""

from ._base import ChangeFeed as ChangeFeed
from ._base import Store as Store
from ._memory import MemoryStore as MemoryStore
from .file import FileStore as FileStore
from .postgres import PostgresStore as PostgresStore

__all__ = ["ChangeFeed", "FileStore", "MemoryStore", "PostgresStore", "Store"]
