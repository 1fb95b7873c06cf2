"""What a failing store does to a virtual actor: the same error as for a workflow's run.

Creating an actor, submitting a call and the call's run raise ``WorkflowExecutionError``
with the ``StoreError`` as ``__cause__``, whichever write failed; the actor then reports
what its log holds, and a resume runs the calls that were recorded. The failures are
injected at every write call in turn (docs/storage.md, "What a failing store does").
"""

# Type checkers do not see what @evflow.virtual_actor adds to a class.
# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import pytest

import evflow
from test_store_failure import FailingStore, check_log

pytestmark = pytest.mark.anyio

#: Write calls (``append_nowait`` and ``flush``) of creating the actor and two calls.
ACTOR_WRITES = 16


@evflow.virtual_actor
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def incr(self) -> int:
        self.count += 1
        return self.count


async def create_and_call_twice() -> list[int]:
    handle = await Counter.get_or_create("c")
    return [await handle.incr.run(), await handle.incr.run()]


async def test_the_count_covers_creating_and_two_calls() -> None:
    store = FailingStore()
    async with evflow.Engine(store):
        assert await create_and_call_twice() == [1, 2]
    assert store.calls == ACTOR_WRITES


@pytest.mark.parametrize("fail_at", range(1, ACTOR_WRITES + 1))
async def test_a_failed_actor_write_raises_the_same_error_wherever_it_happens(fail_at: int) -> None:
    store = FailingStore(fail_at)
    async with evflow.Engine(store):
        with pytest.raises(evflow.WorkflowExecutionError) as info:
            await create_and_call_twice()
        assert type(info.value) is evflow.WorkflowExecutionError
        assert isinstance(info.value.__cause__, evflow.StoreError)
        assert not isinstance(info.value.__cause__, evflow.SequenceConflictError)
        logged = await store.read("c")
        if not logged:  # not even its creation was written
            with pytest.raises(evflow.WorkflowNotFoundError):
                await evflow.get_status("c")
        else:
            # the engine reports what the log holds: a call recorded but not finished
            # makes the actor RESUMABLE
            recorded = check_log(logged)
            assert await evflow.get_status("c") == recorded.replace("RUNNING", "RESUMABLE")
            await evflow.resume("c")  # runs the calls that were recorded
            assert await evflow.get_status("c") == "SUCCESSFUL"
        submitted = sum(type(e).__name__ == "ActorCallSubmitted" for e in logged)
        handle = await Counter.get_or_create("c")
        assert await handle.incr.run() == submitted + 1  # each recorded call ran once
    assert check_log(await store.read("c")) == "SUCCESSFUL"
    assert store.calls > fail_at  # the store was written again after the failure
