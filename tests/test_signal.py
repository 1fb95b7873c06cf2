"""The engine's one-shot signal behaves as ``anyio.Event`` on both backends."""

from __future__ import annotations

import anyio
import pytest

from evflow._signal import new_signal

pytestmark = pytest.mark.anyio


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    signal = new_signal()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await signal.wait()
        woken.append(i)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
            assert not signal.is_set() and woken == []
            signal.set()
            signal.set()  # a second set changes nothing
        assert signal.is_set() and sorted(woken) == [0, 1, 2]
        await signal.wait()


async def test_a_canceled_waiter_leaves_the_others_waiting() -> None:
    signal = new_signal()
    woken: list[str] = []

    async def waiter(name: str, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await signal.wait()
            woken.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            first = await tg.start(waiter, "first")
            await tg.start(waiter, "second")
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            signal.set()
    assert woken == ["second"]


async def test_waiting_on_a_set_signal_is_a_checkpoint() -> None:
    signal = new_signal()
    signal.set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await signal.wait()
        pytest.fail("a canceled wait on a set signal returned")
    assert scope.cancelled_caught
