"""Stores: where event logs live (memory, embedded file log, PostgreSQL)."""

from ._base import Store as Store
from ._memory import MemoryStore as MemoryStore

__all__ = ["MemoryStore", "Store"]
