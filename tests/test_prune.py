"""``evflow.prune`` and ``evflow prune`` (SPEC section 11): finished workflows that ended
long enough ago are deleted, never a running or pending one; on the file store the space
is reclaimed and a crash mid-prune leaves every workflow whole or gone.

The clock prune reads is moved forward instead of waiting: no timing in these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import evflow
import history_workflows as hw
from evflow.engine import _history
from evflow.stores import MemoryStore, Store
from evflow.stores.file._layout import log_file_name
from pg_schema import postgres_stores
from test_cli import evflow_cli

TESTS_DIR = Path(__file__).resolve().parent

Storage = Callable[[], "str | Store"]


@pytest.fixture(params=["memory", "file", "postgres"])
async def storage(
    request: pytest.FixtureRequest, anyio_backend: str, tmp_path: Path
) -> AsyncIterator[Storage]:
    if request.param == "memory":
        store = MemoryStore()
        yield lambda: store
        return
    if request.param == "file":
        yield lambda: str(tmp_path / "store")
        return
    async for factory in postgres_stores(anyio_backend):
        yield factory


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """``later(s)``: prune sees the clock ``s`` seconds ahead of the real one."""

    def move(seconds: float) -> None:
        monkeypatch.setattr(_history, "clock", lambda: time.time() + seconds)

    return move


async def populate(engine: evflow.Engine, flag: Path) -> str:
    """ok (SUCCESSFUL), bad (FAILED), stopped (CANCELED), busy (RUNNING), an idle actor;
    returns the gate key that keeps ``busy`` running."""
    await hw.fetch.step("order-1").run("ok")
    with pytest.raises(evflow.WorkflowExecutionError):
        await hw.checkout("order-2", str(flag)).run("bad")
    key = uuid.uuid4().hex
    hw.gates[key] = anyio.Event()
    await hw.gated.step(key, 1).run_async("stopped")
    await engine.cancel("stopped")
    await hw.gated.step(key, 2).run_async("busy")
    counter = await hw.Counter.get_or_create("counter")
    await counter.incr.run(1)
    return key


async def ids(engine: evflow.Engine) -> list[str]:
    return sorted(wid for wid, _ in await engine.list_all())


@pytest.mark.anyio
async def test_prune_deletes_old_finished_workflows_only(
    storage: Storage, tmp_path: Path, later: Callable[[float], None]
) -> None:
    async with evflow.Engine(storage()) as engine:
        key = await populate(engine, tmp_path / "flag")
        everything = ["bad", "busy", "counter", "ok", "stopped"]
        assert await evflow.prune(older_than=3600) == 0  # nothing ended an hour ago
        assert await ids(engine) == everything
        later(7200)
        assert await evflow.prune(older_than=3600) == 1  # SUCCESSFUL by default
        assert await ids(engine) == ["bad", "busy", "counter", "stopped"]
        with pytest.raises(evflow.WorkflowNotFoundError):
            await engine.get_status("ok")
        assert await engine.prune(3600, statuses=("FAILED", "CANCELED")) == 2
        assert await ids(engine) == ["busy", "counter"]  # running, and an actor
        assert await engine.prune(0, statuses=["SUCCESSFUL", "FAILED", "canceled"]) == 0
        for forbidden in ("RUNNING", "RESUMABLE", "PENDING"):
            with pytest.raises(ValueError):
                await engine.prune(0, statuses=[forbidden])
        with pytest.raises(ValueError):
            await engine.prune(-1)
        with pytest.raises(TypeError):
            await engine.prune("30d")  # type: ignore[arg-type]
        hw.gates[key].set()
        assert await engine.get_output("busy") == 2
        assert await engine.prune(3600) == 1
        await hw.fetch.step("order-1").run("ok")  # the id is free again
        assert await engine.get_status("ok") == "SUCCESSFUL"
    async with evflow.Engine(storage()) as engine:  # and stays deleted
        assert await ids(engine) == ["counter", "ok"]


@pytest.mark.anyio
async def test_a_resumable_workflow_is_never_pruned(storage: Storage, later: Callable[[float], None]) -> None:
    key = uuid.uuid4().hex
    hw.gates[key] = anyio.Event()
    async with evflow.Engine(storage()) as engine:
        await hw.gated.step(key, 1).run_async("left")
        with anyio.fail_after(20):
            while (await engine.get_metadata("left", "gated"))["status"] != "RUNNING":
                await anyio.sleep(0.01)
    later(10**6)
    async with evflow.Engine(storage()) as engine:
        assert await engine.get_status("left") == "RESUMABLE"
        assert await engine.prune(0, ["SUCCESSFUL", "FAILED", "CANCELED"]) == 0
        assert await ids(engine) == ["left"]


def test_the_file_store_removes_the_logs(tmp_path: Path) -> None:
    store = tmp_path / "store"

    async def main() -> int:
        async with evflow.Engine(str(store)) as engine:
            for i in range(3):
                await hw.fetch.step(f"order-{i}").run(f"w{i}")
            return await engine.prune(0)

    logs = store / "workflows"
    assert anyio.run(main) == 3
    assert sorted(os.listdir(logs)) == []
    assert not (logs / log_file_name("w0")).exists()


def test_prune_on_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"

    async def main() -> None:
        async with evflow.Engine(str(store)):
            await hw.fetch.step("order-1").run("ok")
            with pytest.raises(evflow.WorkflowExecutionError):
                await hw.checkout("order-2", str(tmp_path / "flag")).run("bad")

    anyio.run(main)
    kept = evflow_cli(store, "prune", "--older-than", "30d")
    assert (kept.code, kept.out.strip()) == (0, "pruned 0 workflows")
    pruned = evflow_cli(store, "prune", "--older-than", "0s")
    assert (pruned.code, pruned.out.strip()) == (0, "pruned 1 workflow")
    as_json = evflow_cli(store, "--json", "prune", "--older-than", "0", "--status", "failed")
    assert (as_json.code, as_json.json()) == (0, {"pruned": 1})
    assert evflow_cli(store, "--json", "list").json() == []
    for bad in (["--older-than", "soon"], ["--older-than", "1d", "--status", "RUNNING"], []):
        result = evflow_cli(store, "prune", *bad)
        assert result.code == 2, (bad, result.err)


# -- a crash mid-prune ---------------------------------------------------------------------------


def logs_of(export: str) -> dict[str, list[str]]:
    """Exported JSON lines grouped by workflow (each log begins with its seq 1)."""
    logs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in export.splitlines():
        event = json.loads(line)
        if event["type"] == "WorkflowStarted" and event["seq"] == 1:
            current = logs[event["workflow_id"]] = []
        current.append(line)
    return logs


def child(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    env.pop("EVFLOW_STORAGE", None)
    return subprocess.run(
        [sys.executable, "-c", "import sys, history_workflows; history_workflows.main(sys.argv[1:])", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before-unlink", "after-unlink"])
def test_a_crash_mid_prune_leaves_every_workflow_whole_or_gone(tmp_path: Path, mode: str) -> None:
    store = str(tmp_path / "store")
    count, kill_at = 6, 3
    made = child("populate", store, str(count))
    assert made.returncode == 0, made.stderr
    exported = evflow_cli(Path(store), "export", "--all")
    before = logs_of(exported.out)
    assert len(before) == count, exported.out

    died = child("prune", store, str(kill_at), mode)
    assert died.returncode == -9, (died.returncode, died.stderr)

    # a reader before any writer recovers the store, then a writer: each is whole or gone
    for opened_by_writer in (False, True):
        if opened_by_writer:
            recovered = child("populate", store, "0")  # opens and closes an engine: recovery
            assert recovered.returncode == 0, recovered.stderr
        verify = evflow_cli(Path(store), "verify")
        assert verify.code == 0, verify.out + verify.err
        listed = {
            entry["workflow_id"]: entry["status"]
            for entry in evflow_cli(Path(store), "--json", "list").json()
        }
        assert set(listed.values()) <= {"SUCCESSFUL"}
        assert set(listed) <= set(before)
        assert len(listed) <= count - (kill_at - 1)  # the deletions before the kill are done
        if mode == "before-unlink":
            assert len(listed) == count - kill_at  # the journal holds the third deletion
        if listed:
            after = logs_of(evflow_cli(Path(store), "export", *sorted(listed)).out)
            assert after == {wid: before[wid] for wid in listed}
