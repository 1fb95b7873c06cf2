"""Inside a running step: ``get_current_workflow_id``, ``get_current_step_name`` and
``get_current_attempt`` (SPEC section 8), for sync and async steps."""

from __future__ import annotations

from typing import Any

import pytest

import evflow

pytestmark = pytest.mark.anyio

seen: list[tuple[str, str, int]] = []


def where() -> tuple[str, str, int]:
    return (evflow.get_current_workflow_id(), evflow.get_current_step_name(), evflow.get_current_attempt())


@evflow.step(name="sync_flaky", max_retries=2)
def sync_flaky() -> int:
    seen.append(where())
    if evflow.get_current_attempt() < 3:
        raise ValueError("not yet")
    return evflow.get_current_attempt()


@evflow.step(name="async_flaky", max_retries=1)
async def async_flaky(previous: int) -> Any:
    seen.append(where())
    if evflow.get_current_attempt() == 1:
        raise ValueError("not yet")
    return (previous, evflow.get_current_workflow_id(), evflow.get_current_step_name())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_step_knows_its_workflow_name_and_attempt(anyio_backend: str, kind: str) -> None:
    seen.clear()
    async with evflow.Engine("memory://"):
        node = sync_flaky.step() if kind == "sync" else async_flaky.step(7)
        out = await node.run("wf-ctx")
    if kind == "sync":
        assert out == 3
        assert seen == [("wf-ctx", "sync_flaky", 1), ("wf-ctx", "sync_flaky", 2), ("wf-ctx", "sync_flaky", 3)]
    else:
        assert out == (7, "wf-ctx", "async_flaky")
        assert seen == [("wf-ctx", "async_flaky", 1), ("wf-ctx", "async_flaky", 2)]


async def test_each_step_of_a_dag_sees_its_own_name(anyio_backend: str) -> None:
    seen.clear()
    async with evflow.Engine("memory://"):
        await async_flaky.step(async_flaky.step(sync_flaky.step())).run("wf-dag")
    names = [name for _, name, attempt in seen if attempt == 1]
    assert names == ["sync_flaky", "async_flaky_1", "async_flaky"]


@pytest.mark.parametrize(
    "func",
    [evflow.get_current_workflow_id, evflow.get_current_step_name, evflow.get_current_attempt],
    ids=lambda f: f.__name__,
)
async def test_outside_a_step_they_raise_runtime_error(anyio_backend: str, func: Any) -> None:
    with pytest.raises(RuntimeError, match=func.__name__):
        func()
    async with evflow.Engine("memory://"):
        with pytest.raises(RuntimeError, match="inside a running step"):
            func()
