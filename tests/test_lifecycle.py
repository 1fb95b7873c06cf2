"""Engine lifecycle: fixtures entered and left in different tasks, process exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import evflow


@evflow.step
def double(x: int) -> int:
    return 2 * x


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[evflow.Engine]:
    # pytest-asyncio runs a fixture's setup and teardown as separate tasks
    async with evflow.Engine("memory://") as opened:
        yield opened


@pytest.mark.asyncio
async def test_engine_from_a_pytest_asyncio_fixture(engine: evflow.Engine) -> None:
    assert await double.step(21).run("wf") == 42
    assert await engine.get_status("wf") == "SUCCESSFUL"
    handle = await double.step(1).run_async("other")
    assert await handle == 2


@pytest.mark.asyncio
async def test_a_fixture_engine_left_with_a_workflow_running(engine: evflow.Engine) -> None:
    @evflow.step
    async def forever() -> None:
        import anyio

        await anyio.sleep(3600)

    await forever.step().run_async("wf")
    assert await engine.get_status("wf") == "RUNNING"


SCRIPT = textwrap.dedent(
    """
    import threading, time, anyio, evflow

    @evflow.step
    def stuck():
        threading.Event().wait()      # never returns

    async def main(mode):
        async with evflow.Engine("memory://"):
            handle = await stuck.step().run_async("wf")
            while (await evflow.get_metadata("wf"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            if mode == "cancel":
                await evflow.cancel("wf")
                print(await evflow.get_status("wf"), flush=True)
            # mode == "exit": leave the engine with the thread still blocked
        print("left", flush=True)

    import sys
    anyio.run(main, sys.argv[1], backend=sys.argv[2])
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("mode", ["cancel", "exit"])
def test_an_abandoned_sync_thread_never_keeps_the_process_alive(
    tmp_path: Path, mode: str, backend: str
) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(SCRIPT)
    # The timeout only detects a hang; a healthy run exits as soon as main returns.
    proc = subprocess.run(
        [sys.executable, str(script), mode, backend], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[-1] == "left"
    if mode == "cancel":
        assert lines[0] == "CANCELED"
