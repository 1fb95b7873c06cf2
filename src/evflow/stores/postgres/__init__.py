"""The PostgreSQL store (see ``_store``'s docstring for its modules)."""

from ._store import PostgresStore as PostgresStore

__all__ = ["PostgresStore"]
