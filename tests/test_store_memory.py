"""The in-memory store passes the store contract (tests/store_contract.py)."""

from __future__ import annotations

from pathlib import Path

from evflow.stores import MemoryStore, Store
from store_contract import StoreContract


class TestMemoryStore(StoreContract):
    async def make_store(self, tmp_path: Path) -> Store:
        store = MemoryStore()
        await store.open()
        return store
