"""``evflow.web.lifespan`` and which engine module-level calls in request handlers use
(docs/web.md, "Which engine a request handler uses")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import evflow
import evflow.web
from evflow.engine import Engine, default_engine

pytestmark = pytest.mark.anyio


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


async def start(request: Request) -> JSONResponse:
    handle = await add.step(1, 2).run_async(request.path_params["wid"])
    return JSONResponse({"output": await handle.result(), "list": await evflow.list_all()})


def user_app(**engine_options: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/start/{wid}", start, methods=["POST"]),
            Mount("/evflow", evflow.web.app()),
        ],
        lifespan=evflow.web.lifespan("memory://", **engine_options),
    )


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[None]:
    """Runs the app's lifespan in a task of its own, as a server does: its context (where
    the engine's block is) never reaches the requests."""
    started = anyio.Event()
    stop = anyio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lifespan)
        await started.wait()
        try:
            yield
        finally:
            stop.set()


@asynccontextmanager
async def engine_elsewhere() -> AsyncIterator[Engine]:
    """A second engine, opened in another task (a fixture's, say): open, but current nowhere here."""
    opened = anyio.Event()
    stop = anyio.Event()
    box: list[Engine] = []

    async def hold() -> None:
        async with Engine("memory://") as engine:
            box.append(engine)
            opened.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await opened.wait()
        try:
            yield box[0]
        finally:
            stop.set()


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_handlers_use_the_lifespans_engine_with_a_second_engine_open() -> None:
    app = user_app()
    async with running(app), engine_elsewhere() as other, client(app) as c:
        answer = await c.post("/start/wf")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"output": 3, "list": [["wf", "SUCCESSFUL"]]}
        assert await other.list_all() == []
        # the mounted dashboard app with no engine of its own serves the same engine
        assert (await c.get("/evflow/api/workflows")).json() == [
            {"workflow_id": "wf", "status": "SUCCESSFUL"}
        ]


async def test_without_a_default_two_open_engines_are_ambiguous() -> None:
    async with engine_elsewhere(), engine_elsewhere():
        with pytest.raises(evflow.NoEngineError):
            await evflow.list_all()


async def test_the_callers_own_block_comes_before_the_default() -> None:
    async with engine_elsewhere() as default:
        with default_engine(default):
            assert evflow.engine.current_engine() is default
            async with Engine("memory://") as mine:
                assert evflow.engine.current_engine() is mine
            assert evflow.engine.current_engine() is default
        async with engine_elsewhere():
            with pytest.raises(evflow.NoEngineError):
                evflow.engine.current_engine()


async def test_a_closed_default_is_skipped() -> None:
    async with engine_elsewhere() as first, engine_elsewhere() as second, engine_elsewhere():
        with default_engine(first), default_engine(second):
            assert evflow.engine.current_engine() is second
            await second.aclose()
            assert evflow.engine.current_engine() is first


async def test_the_lifespan_closes_its_engine_and_drops_the_default() -> None:
    app = user_app()
    async with running(app), client(app) as c:
        assert (await c.post("/start/wf")).status_code == 200
    with pytest.raises(evflow.NoEngineError):
        evflow.engine.current_engine()


async def test_the_lifespan_state_holds_the_engine() -> None:
    app = user_app()
    async with evflow.web.lifespan("memory://")(app) as state:
        assert state["evflow_engine"] is evflow.engine.current_engine()
        assert state["evflow_engine"].is_open
    assert not state["evflow_engine"].is_open


async def test_engine_options_reach_the_engine() -> None:
    app = user_app(allow_pickle=False)
    async with running(app):
        assert evflow.engine.current_engine().allow_pickle is False
    with pytest.raises(TypeError):
        async with evflow.web.lifespan("memory://", no_such_option=1)(app):
            pass
