"""Stores: where event logs live (memory, embedded file log, PostgreSQL)."""

from ._base import Store as Store
from ._file import FileStore as FileStore
from ._memory import MemoryStore as MemoryStore
from ._postgres import PostgresStore as PostgresStore

__all__ = ["FileStore", "MemoryStore", "PostgresStore", "Store"]
