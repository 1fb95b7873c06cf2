"""The chaos test of SPEC section 10 (run in CI): four ``evflow worker`` processes on one
PostgreSQL store run 500 workflows of 20 durable steps from a queue while a random worker
is SIGKILLed and restarted every ~2 s, and one is SIGSTOPped for a while, then SIGCONTed.

Every step execution is written to a side table (tests/scale_workflows.py), so the test
sees what ran where and when, whoever died. It asserts: every workflow SUCCESSFUL with the
right output; no step whose StepFinished was durable ran again; no step ran on two
engines at once (but the one a paused worker was inside when it was paused: its code
resumes after SIGCONT although its result is refused, see docs/scale-out.md); and each
killed worker's workflows were taken over within 10 s. It prints the figures.
"""

from __future__ import annotations

import itertools
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
import scale_workflows  # noqa: E402
from scale_harness import (  # noqa: E402
    Cluster,
    Worker,
    durable_finish_reruns,
    new_cluster,
    output_once_taken_over,
    side_rows,
    sql,
)

pytestmark = pytest.mark.slow

WORKERS = 4
WORKFLOWS = 500
STEPS = 20
PAUSE = 0.01  # each step's own time
KILL_EVERY = 2.0
STOP_FOR = 5.0  # longer than the lease (3 s at the default recovery_interval of 5 s)
#: The issue's bound for a takeover after a kill (the engine promises recovery_interval, 5 s).
TAKEOVER_BOUND = 10.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with new_cluster(tmp_path) as made:
        yield made


def finished(cluster: Cluster) -> int:
    rows = sql(f'SELECT count(*) FROM "{cluster.schema}".events WHERE type = $1', "WorkflowFinished")
    return int(rows[0][0])


def test_chaos_four_workers_sigkill_every_two_seconds_and_a_sigstop(cluster: Cluster) -> None:
    rng = random.Random(20261202)
    slots: dict[int, Worker] = {}
    generation = [0] * WORKERS

    def start(slot: int) -> Worker:
        worker = cluster.start(f"w{slot}-{generation[slot]}", queues=("scale-chaos",))
        generation[slot] += 1
        slots[slot] = worker
        return worker

    for slot in range(WORKERS):
        start(slot)
    for worker in slots.values():
        cluster.wait_serving(worker)

    async def enqueue() -> None:
        async with evflow.Engine(cluster.store(), queues=[]):
            for i in range(WORKFLOWS):
                await scale_workflows.chaos.enqueue(
                    scale_workflows.chain(STEPS, PAUSE), workflow_id=f"c-{i:03d}"
                )

    began = time.time()
    anyio.run(enqueue)
    kills: list[Worker] = []
    paused: tuple[Worker, float, float] | None = None
    deadline = time.monotonic() + 240
    rounds = 0
    while finished(cluster) < WORKFLOWS:
        assert time.monotonic() < deadline, f"only {finished(cluster)} of {WORKFLOWS} finished"
        time.sleep(KILL_EVERY * rng.uniform(0.75, 1.25))
        rounds += 1
        if rounds == 3 and paused is None:  # one SIGSTOP / SIGCONT, on a worker nobody kills meanwhile
            slot = rng.randrange(WORKERS)
            victim = slots[slot]
            victim.proc.send_signal(signal.SIGSTOP)
            stopped = time.time()
            time.sleep(STOP_FOR)
            victim.proc.send_signal(signal.SIGCONT)
            paused = (victim, stopped, time.time())
            continue
        slot = rng.randrange(WORKERS)
        if paused is not None and slots[slot] is paused[0]:
            slot = (slot + 1) % WORKERS
        victim = slots[slot]
        cluster.kill(victim)
        kills.append(victim)
        start(slot)
    took = time.time() - began
    for worker in slots.values():
        cluster.wait_serving(worker)  # a worker restarted last may still be starting
        cluster.kill(worker, signal.SIGTERM)
        assert worker.proc.returncode == 0, worker.stderr()

    async def logs() -> dict[str, tuple[Any, list[Any]]]:
        async with evflow.Engine(cluster.store(), queues=[]) as engine:
            out = {}
            for i in range(WORKFLOWS):
                wid = f"c-{i:03d}"
                out[wid] = (await output_once_taken_over(engine, wid), await engine.store.read(wid))
            return out

    results = anyio.run(logs)
    rows = side_rows(cluster)
    by_workflow: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_workflow[row[0]].append(row)
    killed_at = {w.name: w.killed for w in kills}

    # every workflow SUCCESSFUL with the right output
    assert {wid: output for wid, (output, _) in results.items()} == {
        f"c-{i:03d}": STEPS * (STEPS + 1) // 2 for i in range(WORKFLOWS)
    }
    # no step whose StepFinished was durable ran again
    reruns = [
        r for wid, (_, events) in results.items() for r in durable_finish_reruns(events, by_workflow[wid])
    ]
    assert reruns == [], explain_reruns(reruns, results, by_workflow, killed_at, paused)
    # no step ran on two engines at once (but what the paused worker was inside when paused)
    in_flight_at_pause = 0
    overlaps = []
    for wid, wf_rows in by_workflow.items():
        by_step: dict[str, list[Any]] = defaultdict(list)
        for row in wf_rows:
            by_step[row[6]].append(row)
        for executions in by_step.values():
            spans = []
            for _wid, _step, worker, _pid, started, ended, _name in executions:
                pausing = paused is not None and worker == paused[0].name and started < paused[1]
                if pausing and (ended is None or ended > paused[1]):  # type: ignore[index]
                    in_flight_at_pause += 1
                    continue
                end = ended if ended is not None else killed_at.get(worker) or time.time()
                spans.append((started, end, worker))
            spans.sort()
            for (s1, e1, w1), (s2, _e2, w2) in itertools.pairwise(spans):
                if w1 != w2 and s2 < e1:
                    overlaps.append((wid, w1, w2, s1, e1, s2))
    assert overlaps == []
    # each killed worker's workflows were taken over within the bound
    takeovers: list[float] = []
    for _output, events in results.values():
        owners = [
            (e.owner, e.time) for e in events if type(e).__name__ == "WorkflowStarted" and not e.pending
        ]
        for (before, _t1), (after, t2) in itertools.pairwise(owners):
            if before in killed_at and after != before:
                dead_at = killed_at[before]
                assert dead_at is not None
                if t2 >= dead_at:
                    takeovers.append(t2 - dead_at)
    assert kills and takeovers
    assert max(takeovers) <= TAKEOVER_BOUND, f"a takeover took {max(takeovers):.1f} s"
    executions = len(rows)
    distinct = len({(r[0], r[6]) for r in rows})
    print(
        f"\nchaos: {WORKFLOWS} workflows x {STEPS} steps on {WORKERS} workers in {took:.1f} s; "
        f"{len(kills)} SIGKILLs, 1 SIGSTOP of {STOP_FOR:.0f} s; {len(takeovers)} takeovers after a kill, "
        f"max {max(takeovers):.2f} s, median {sorted(takeovers)[len(takeovers) // 2]:.2f} s; "
        f"step executions {executions} for {distinct} steps: {executions - distinct} in-flight steps "
        f"ran again ({in_flight_at_pause} of them inside the paused worker when it was paused)"
    )


def explain_reruns(
    reruns: list[Any],
    results: dict[str, tuple[Any, list[Any]]],
    by_workflow: dict[str, list[Any]],
    killed_at: dict[str, float | None],
    paused: tuple[Worker, float, float] | None,
) -> str:
    """What a failure needs to be understood: each affected workflow's log (seq, type,
    owner, time) and every execution of the step, with the kills and the pause."""
    lines = [f"kills: {killed_at}", f"paused: {paused and (paused[0].name, paused[1], paused[2])}"]
    for wid in sorted({r[0] for r in reruns}):
        lines.append(f"log of {wid}:")
        for e in results[wid][1]:
            who = getattr(e, "owner", None) or getattr(e, "name", "")
            lines.append(f"  {e.seq:>3} {type(e).__name__:<16} {who} {e.time:.4f}")
        names = {r[6] for r in reruns if r[0] == wid}
        lines += [f"  ran: {r}" for r in by_workflow[wid] if r[6] in names]
    return "\n".join(lines)
