"""The embedded file store (see ``_store``'s docstring for its modules)."""

from ._store import FileStore as FileStore
from ._store import FileStoreStatistics as FileStoreStatistics

__all__ = ["FileStore", "FileStoreStatistics"]
