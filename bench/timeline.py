"""Where one step of a strictly durable chain spends its wall time (workload (a)).

    .venv/bin/python bench/timeline.py [--steps 1000] [--runs 3]

Wraps the file store's ``flush``, its writer thread's commit and fdatasync, and the batch
wake-up on the event loop with timestamps, runs a chain of async continuations, and prints
the median, mean and 99th percentile of each leg of a step (``--sync``: sync steps, which
add the hop to a step worker thread to the engine's leg):

    flush -> commit start       the writer thread waking up for the flush (L1)
    commit                      journal write + fdatasync + log append, on the writer thread
    commit end -> wake-up       the event loop waking up for the finished batch (L2)
    wake-up -> next flush       the engine on the event loop: the next step, its events

Instrumentation adds a few microseconds per leg; compare legs, not the total with run.py.
"""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import anyio
from _common import tmp_root
from evflow_steps import achain, chain

import evflow
from evflow.stores.file import _io, _store, _writer

STAMPS: dict[str, list[float]] = {
    "flush": [],
    "commit0": [],
    "commit1": [],
    "sync0": [],
    "sync1": [],
    "wake": [],
}


def instrument() -> None:
    flush, commit, fsync, finish = (
        _store.FileStore.flush,
        _store.FileStore._commit,
        _io.fdatasync,
        _writer._Batch.finish,
    )

    async def timed_flush(self: Any, workflow_id: str | None = None) -> None:
        STAMPS["flush"].append(time.perf_counter())
        await flush(self, workflow_id)

    def timed_commit(self: Any, batch: Any) -> None:
        STAMPS["commit0"].append(time.perf_counter())
        commit(self, batch)
        STAMPS["commit1"].append(time.perf_counter())

    def timed_fsync(fd: int) -> None:
        STAMPS["sync0"].append(time.perf_counter())
        fsync(fd)
        STAMPS["sync1"].append(time.perf_counter())

    def timed_finish(self: Any) -> None:
        STAMPS["wake"].append(time.perf_counter())
        finish(self)

    _store.FileStore.flush = timed_flush  # type: ignore[method-assign]
    _store.FileStore._commit = timed_commit  # type: ignore[method-assign]
    _io.fdatasync = timed_fsync  # the store's I/O seam (evflow.stores.file._io)
    _writer._Batch.finish = timed_finish  # type: ignore[method-assign]


def legs() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"L1": [], "commit": [], "fdatasync": [], "L2": [], "engine": []}
    flushes, wakes = STAMPS["flush"], STAMPS["wake"]
    for start, end in zip(STAMPS["commit0"], STAMPS["commit1"], strict=True):
        i = bisect.bisect_right(flushes, start) - 1
        j = bisect.bisect_left(wakes, end)
        if i < 0 or j >= len(wakes):
            continue
        out["L1"].append(start - flushes[i])
        out["commit"].append(end - start)
        out["L2"].append(wakes[j] - end)
        k = bisect.bisect_right(flushes, wakes[j])
        if k < len(flushes):
            out["engine"].append(flushes[k] - wakes[j])
    out["fdatasync"] = [b - a for a, b in zip(STAMPS["sync0"], STAMPS["sync1"], strict=True)]
    return out


async def one_run(steps: int, sync: bool) -> float:
    step = chain if sync else achain
    os.makedirs(tmp_root(), exist_ok=True)
    directory = tempfile.mkdtemp(prefix="timeline-", dir=tmp_root())
    try:
        async with evflow.Engine(directory):
            await step.step(1, 50).run("warm-up")
            for values in STAMPS.values():
                values.clear()
            t0 = time.perf_counter()
            await step.step(1, steps).run("timed")
            return (time.perf_counter() - t0) / steps
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sync", action="store_true", help="sync steps (a worker thread each)")
    args = parser.parse_args()
    instrument()
    names = {
        "L1": "flush -> commit start (writer wakes)",
        "commit": "commit (journal + fdatasync + log)",
        "fdatasync": "  of which fdatasync",
        "L2": "commit end -> wake-up on the loop",
        "engine": "wake-up -> next flush (engine, loop)",
    }
    for run in range(args.runs):
        per_step = anyio.run(one_run, args.steps, args.sync)
        print(f"run {run + 1}: {1 / per_step:,.0f} steps/s, {per_step * 1e6:.0f} us a step")
        for key, values in legs().items():
            p99 = sorted(values)[len(values) * 99 // 100]
            print(
                f"  {names[key]:40s} median {statistics.median(values) * 1e6:6.1f} us"
                f"  mean {statistics.fmean(values) * 1e6:6.1f}  p99 {p99 * 1e6:7.1f}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
