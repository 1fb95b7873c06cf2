"""Workflow (and actor) ids that cannot be stored are refused with the documented
``ValueError``, on every store and every public call that takes one (SPEC section 3).

A lone surrogate (``"a\\udc80b"``) is a ``str`` but not text: it has no UTF-8 encoding,
and the log and the stores keep ids as UTF-8.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import evflow

DSN = os.environ.get("EVFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BAD_ID = "a\udc80b"


@evflow.step
def one() -> int:
    return 1


@evflow.virtual_actor
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self, by: int) -> int:
        self.n += by
        return self.n


#: (anyio backend, store): the PostgreSQL store runs on asyncio only.
CASES = [
    pytest.param(("asyncio", "memory"), id="asyncio-memory"),
    pytest.param(("trio", "memory"), id="trio-memory"),
    pytest.param(("asyncio", "file"), id="asyncio-file"),
    pytest.param(("trio", "file"), id="trio-file"),
    pytest.param(("asyncio", "postgres"), id="asyncio-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    backend, store = request.param
    return str(backend), str(store)


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[0]


@pytest.fixture
async def storage(case: tuple[str, str], tmp_path: Path) -> AsyncIterator[str]:
    if case[1] == "memory":
        yield "memory://"
        return
    if case[1] == "file":
        yield str(tmp_path / "store")
        return
    import asyncpg

    try:
        conn = await asyncpg.connect(DSN, timeout=5)
    except Exception as exc:  # any failure to connect means: no server for these tests
        pytest.skip(f"PostgreSQL not reachable: {exc!r}")
    schema = f"evflow_test_{uuid.uuid4().hex}"
    try:
        yield f"{DSN}?schema={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


CALLS: list[Any] = [
    pytest.param(lambda wid: one.step().run(wid), id="run"),
    pytest.param(lambda wid: one.step().run_async(wid), id="run_async"),
    pytest.param(evflow.get_status, id="get_status"),
    pytest.param(evflow.get_metadata, id="get_metadata"),
    pytest.param(evflow.get_output, id="get_output"),
    pytest.param(evflow.resume, id="resume"),
    pytest.param(evflow.resume_async, id="resume_async"),
    pytest.param(evflow.cancel, id="cancel"),
    pytest.param(evflow.delete, id="delete"),
    pytest.param(evflow.get_actor, id="get_actor"),
    pytest.param(lambda wid: Tally.get_or_create(wid), id="actor-get_or_create"),  # type: ignore[attr-defined]
]


@pytest.mark.anyio
@pytest.mark.parametrize("call", CALLS)
async def test_an_id_with_a_lone_surrogate_is_a_value_error(
    storage: str, call: Callable[[str], Awaitable[Any]]
) -> None:
    async with evflow.Engine(storage):
        with pytest.raises(ValueError, match=r"workflow id .* lone surrogate") as caught:
            await call(BAD_ID)
        assert not isinstance(caught.value, UnicodeError)  # the documented error, not a raw one
        assert await evflow.list_all() == []


@pytest.mark.anyio
async def test_read_events_refuses_an_id_with_a_lone_surrogate(storage: str) -> None:
    async with evflow.Engine(storage):
        await one.step().run("ok")
    with pytest.raises(ValueError, match=r"workflow id .* lone surrogate") as caught:
        async for _ in evflow.read_events(storage, BAD_ID):
            pass
    assert not isinstance(caught.value, UnicodeError)


def test_the_cli_refuses_an_id_with_a_lone_surrogate(tmp_path: Path) -> None:
    # An argv byte that is not UTF-8 reaches Python as a lone surrogate.
    result = subprocess.run(
        [sys.executable, "-m", "evflow", "--storage", str(tmp_path / "store"), "status", BAD_ID],
        capture_output=True,
        check=False,
        timeout=120,
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "lone surrogate" in stderr
    assert "Traceback" not in stderr
