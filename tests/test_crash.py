"""Crash safety with real processes: SIGKILL mid-run, the writer lock, a torn log tail.

Child processes run ``tests/crash_workflows.py`` on a file store in ``tmp_path``. Kill
points are random but taken only after the child has made progress (it appended lines to
the side-effect file), so every kill lands in the middle of the chain; the seed is in
every assertion message.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._codec import FRAME_HEADER, decode_value, read_frames
from evflow._events import AnyEvent, StepFinished, WorkflowStarted
from evflow.stores import FileStore
from evflow.stores.file._layout import LOG_MAGIC, log_file_name

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:  # children get it on PYTHONPATH; this process reads constants
    sys.path.insert(0, str(TESTS_DIR))
import crash_workflows  # noqa: E402

pytestmark = pytest.mark.slow

WID = "chain"
#: Generous bound for a child that should finish: a hang fails the test instead of CI.
CHILD_TIMEOUT = 120


def child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, crash_workflows; crash_workflows.main(sys.argv[1:])", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a child that must succeed; its last stdout line is JSON."""
    out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def runs(side_effects: Path) -> list[tuple[int, float]]:
    """(step index, time) of every execution of a step, in order."""
    if not side_effects.exists():
        return []
    out = []
    for line in side_effects.read_text().splitlines():
        index, at = line.split()
        out.append((int(index), float(at)))
    return out


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str]) -> bool:
    """Wait until the side-effect file has ``count`` lines; False if the child exited."""
    while proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return True
        time.sleep(0.005)
    return False


def read_log(store: Path, workflow_id: str) -> list[AnyEvent]:
    async def read() -> list[AnyEvent]:
        async with FileStore(store, read_only=True) as reader:
            return await reader.read(workflow_id)

    return anyio.run(read)


def step_indexes(events: list[AnyEvent]) -> dict[str, int]:
    """Step name -> the index argument it was recorded with."""
    state = evflow.replay(events)
    out = {}
    for name, step in state.steps.items():
        args, _ = decode_value(step.spec.args)
        out[name] = args[1]
    return out


# -- SIGKILL and resume ---------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["strict", "relaxed"])
def test_a_killed_chain_resumes_and_never_reruns_a_recorded_step(tmp_path: Path, durability: str) -> None:
    """A process kill loses nothing acknowledged in either durability mode (relaxed mode
    trades only what an OS crash may lose)."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    store, side_effects = tmp_path / "store", tmp_path / "side-effects.txt"
    kills = 0
    proc = child("run", str(store), str(side_effects), WID, durability)
    while kills < 4:
        # Let it make progress (1-4 more step executions), then kill it at a random moment.
        # The first child runs 2 steps at least: the second one starts only once the first
        # one's StepFinished is durable, so the workflow exists for `resume`.
        target = len(runs(side_effects)) + rng.randint(2 if kills == 0 else 1, 4)
        if not wait_for_lines(side_effects, target, proc):
            break  # it finished first
        time.sleep(rng.uniform(0, crash_workflows.STEP_SLEEP * 2))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=CHILD_TIMEOUT)
        kills += 1
        proc = child("resume", str(store), str(side_effects), WID, durability)
    result = finish(proc)
    where = f"(seed {seed}, {kills} kills, {durability})"
    assert kills >= 2, f"the chain ended before it could be killed twice {where}"
    assert result == {"output": list(range(crash_workflows.STEPS))}, where

    events = read_log(store, WID)
    state = evflow.replay(events, live=False)
    assert state.status == "SUCCESSFUL", where
    assert set(state.steps) == crash_workflows.expected_step_names(), where
    # a child killed before its resume was durable left no trace of it; the last one did
    resumes = [e for e in events if isinstance(e, WorkflowStarted) and e.resume]
    assert 1 <= len(resumes) <= kills, where

    executions = runs(side_effects)
    ran = {index for index, _ in executions}
    assert ran == set(range(crash_workflows.STEPS)), f"steps that never ran: {where}"
    index_of = step_indexes(events)
    finished_at = {}
    for event in events:
        if isinstance(event, StepFinished):
            assert event.name not in finished_at, f"{event.name} finished twice {where}"
            finished_at[event.name] = event.time
    for name, index in index_of.items():
        again = [at for i, at in executions if i == index and at > finished_at[name]]
        assert again == [], f"step {name} ran again after its output was recorded {where}"


# -- the writer lock -----------------------------------------------------------------------------------


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = child("hold", str(tmp_path / "store"))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=CHILD_TIMEOUT)


def test_a_second_writer_process_is_refused_while_the_first_lives(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    outcome = finish(child("try-open", str(tmp_path / "store")))
    assert outcome["opened"] is False
    assert outcome["error"] == "StoreLockedError"
    assert outcome["holder"] == holder.pid
    assert str(holder.pid) in outcome["message"]


def test_the_writer_in_this_process_is_refused_too(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    async def main() -> None:
        with pytest.raises(evflow.StoreLockedError, match=str(holder.pid)) as info:
            async with evflow.Engine(tmp_path / "store"):
                pass
        assert info.value.pid == holder.pid

    anyio.run(main)


def test_a_lock_left_by_a_killed_writer_never_blocks(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.communicate(timeout=CHILD_TIMEOUT)
    outcome = finish(child("try-open", str(tmp_path / "store")))
    assert outcome["opened"] is True


# -- a torn tail ----------------------------------------------------------------------------------------


def frames_of(log: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every record of a workflow log: the header (the workflow id)
    first, then one per event."""
    buf = log.read_bytes()
    assert buf.startswith(LOG_MAGIC)
    frames = read_frames(buf, len(LOG_MAGIC))
    assert frames.end == len(buf), frames.problem
    return [(start, end - start) for start, end in zip(frames.starts, frames.ends, strict=True)]


@pytest.mark.parametrize(
    "where", [pytest.param("header", id="cut-in-header"), pytest.param("body", id="cut-in-body")]
)
def test_a_torn_tail_is_cut_and_the_workflow_resumes(tmp_path: Path, where: str) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    store, side_effects = tmp_path / "store", tmp_path / "side-effects.txt"
    finish(child("run", str(store), str(side_effects), WID))  # a clean run: the journal is empty
    original = read_log(store, WID)
    log = store / "workflows" / log_file_name(WID)
    records = frames_of(log)[1:]  # the events' records
    assert len(records) == len(original)

    # cut record k (not the first: the workflow must still exist) part-way
    k = rng.randrange(1, len(records))
    offset, size = records[k]
    cut = offset + (
        rng.randrange(1, FRAME_HEADER.size) if where == "header" else rng.randrange(FRAME_HEADER.size, size)
    )
    with open(log, "r+b") as f:
        f.truncate(cut)
    note = f"(seed {seed}, cut record {k} of {len(records)} at byte {cut})"

    async def reopen() -> tuple[evflow.WorkflowStatus, dict[str, Any]]:
        async with evflow.Engine(store) as engine:
            return await engine.get_status(WID), await engine.get_metadata(WID)

    status, metadata = anyio.run(reopen)
    assert status == "RESUMABLE", note
    assert "end_time" not in metadata["stats"], note
    assert read_log(store, WID) == original[:k], note
    assert log.stat().st_size == offset, f"the torn record was not cut {note}"

    result = finish(child("resume", str(store), str(side_effects), WID))
    assert result == {"output": list(range(crash_workflows.STEPS))}, note
    events = read_log(store, WID)
    assert events[:k] == original[:k], note
    assert evflow.replay(events, live=False).status == "SUCCESSFUL", note
