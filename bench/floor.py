"""The fsync floor: append one small record and fsync it, in a loop, in the directory the
stores use. Nothing that makes every step durable one after the other can beat this.

A second figure, the *thread-hop floor*, does the same append + fdatasync in a worker
thread that an asyncio event loop hands each record to and waits for (a queue one way,
``call_soon_threadsafe`` back), as any engine must that keeps blocking I/O off its event
loop: it bounds a sequential workflow on this machine more tightly than the bare loop.

An info figure, ``floor.create_us``, is the wall time per file of creating 2,000 small
files (open O_CREAT|O_EXCL, a 200-byte write, close) in a fresh directory, once per run.
It shows the state of the file system, which the file store (one log file per workflow)
depends on: on ext4 without a journal (this machine's root file system) the inode
allocator skips every inode freed in the last 60-300 s and reads its inode-table block to
check (``find_inode_bit`` -> ``recently_deleted``), so a create right after thousands of
files were deleted costs ~300-450 us of kernel CPU instead of ~13 us. The suite therefore
deletes its temp directories only at the end (``_common.discard``), this one included.

    python bench/floor.py --runs 5 [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import tempfile
import threading
import time

from _common import discard, emit, tmp_root

RECORD = b"\x00" * 48 + b"floor-record\n"  # about the size of a framed StepFinished
N_CREATE = 2000
SMALL_FILE = b"c" * 200


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


def create_run(directory: str, n: int = N_CREATE) -> float:
    """Microseconds (wall) per file of creating ``n`` small files in ``directory`` (made
    here, must not exist). The files stay: deleting them would slow down the next creates."""
    os.mkdir(directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = time.perf_counter_ns()
    for i in range(n):
        fd = os.open(os.path.join(directory, f"{i:05d}.log"), flags, 0o644)
        os.write(fd, SMALL_FILE)
        os.close(fd)
    return (time.perf_counter_ns() - t0) / n / 1000


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
        creates = [create_run(os.path.join(directory, f"create-{i}")) for i in range(args.runs)]
    finally:
        discard(directory)
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
    emit("floor", "floor.create_us", creates, "us/create", higher_is_better=False, info=True, files=N_CREATE)


if __name__ == "__main__":
    main()
