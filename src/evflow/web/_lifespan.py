"""``evflow.web.lifespan``: an engine open for as long as a web app runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .._replay import Storage
from ..engine import Engine, default_engine

__all__ = ["engine_lifespan", "lifespan"]


@asynccontextmanager
async def engine_lifespan(storage: Storage, engine_options: dict[str, Any]) -> AsyncIterator[Engine]:
    """An open engine, the default engine while it is open (``evflow.engine.default_engine``).

    ``recover=True`` unless the options say otherwise.
    """
    options = dict(engine_options)
    options.setdefault("recover", True)
    async with Engine(storage, **options) as engine:
        with default_engine(engine):
            yield engine


def lifespan(
    storage: Storage = None, **engine_options: Any
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for Starlette or FastAPI that opens an engine at startup and closes it
    at shutdown: ``Starlette(lifespan=evflow.web.lifespan("./.evflow"))``.

    While the app runs, its engine is the default engine: module-level calls in request
    handlers (``evflow.get_metadata``, ``node.run_async``, ...) use it, also when other
    engines are open (docs/web.md, "Which engine a request handler uses"). The engine is
    in the lifespan state too: ``request.state.evflow_engine``. ``engine_options`` go to
    ``Engine``; ``recover`` defaults to True, so a restarted app resumes its interrupted
    workflows (and, on PostgreSQL, takes over those of app instances that died).
    """

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with engine_lifespan(storage, engine_options) as engine:
            yield {"evflow_engine": engine}

    return run
