"""The fsync floor: append one small record and fsync it, in a loop, in the directory the
stores use. Nothing that makes every step durable one after the other can beat this.

A second figure, the *thread-hop floor*, does the same append + fdatasync in a worker
thread that an asyncio event loop hands each record to and waits for (a queue one way,
``call_soon_threadsafe`` back), as any engine must that keeps blocking I/O off its event
loop: it bounds a sequential workflow on this machine more tightly than the bare loop.

    python bench/floor.py --runs 5 [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import shutil
import tempfile
import threading
import time

from _common import emit, tmp_root

RECORD = b"\x00" * 48 + b"floor-record\n"  # about the size of a framed StepFinished


def one_run(directory: str, seconds: float) -> float:
    path = os.path.join(directory, "floor.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            os.write(fd, RECORD)
            os.fsync(fd)
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def one_run_via_thread(directory: str, seconds: float) -> float:
    path = os.path.join(directory, "floor-thread.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sync = getattr(os, "fdatasync", os.fsync)

    async def loop_side() -> float:
        loop = asyncio.get_running_loop()
        jobs: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()

        def writer() -> None:
            while (fut := jobs.get()) is not None:
                os.write(fd, RECORD)
                sync(fd)
                loop.call_soon_threadsafe(fut.set_result, None)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while n % 16 or time.perf_counter() < deadline:
            fut = loop.create_future()
            jobs.put(fut)
            await fut
            n += 1
        elapsed = time.perf_counter() - t0
        jobs.put(None)
        thread.join()
        return n / elapsed

    try:
        return asyncio.run(loop_side())
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    os.makedirs(tmp_root(), exist_ok=True)
    directory = tempfile.mkdtemp(prefix="floor-", dir=tmp_root())
    try:
        one_run(directory, 0.2)  # warm-up: allocate the file's first blocks
        values = [one_run(directory, args.seconds) for _ in range(args.runs)]
        via_thread = [one_run_via_thread(directory, args.seconds) for _ in range(args.runs)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    emit("floor", "floor.fsync", values, "fsyncs/s", higher_is_better=True)
    emit(
        "floor",
        "floor.fsync_latency",
        [1e6 / v for v in values],
        "us/fsync",
        higher_is_better=False,
        info=True,
    )
    emit("floor", "floor.via_thread", via_thread, "fsyncs/s", higher_is_better=True)


if __name__ == "__main__":
    main()
