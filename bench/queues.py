"""(i) queues (issue 12): N 1-step workflows through an ``evflow.Queue`` with concurrency 50,
on the file store and on PostgreSQL, against the same N with plain ``run_async``, and the
same against DBOS's queue on the same PostgreSQL server, in one run.

    .venv/bin/python bench/queues.py                     # --n 10000 --runs 3, evflow and DBOS
    .venv/bin/python bench/queues.py --n 2000 --runs 3   # smaller, quicker
    .venv/bin/python bench/queues.py --skip-peers        # evflow only
    .venv/bin/python bench/queues.py --stores file       # evflow's file store only (no server)
    .venv/bin/python bench/queues.py --dbos-poll 1,0.05  # also DBOS with a shorter poll

Each measurement is a process of its own (``queues.py one ...`` for evflow,
``peer_dbos_queues.py`` with the dbos venv's python for DBOS): a fresh store, an untimed
warm-up of 50 workflows the same way, then N. A round measures every (system, store, kind)
once, in this order: evflow file plain, file queue, PostgreSQL plain, PostgreSQL queue,
then DBOS plain and queue (one per ``--dbos-poll``); ``--runs`` rounds, so evflow and DBOS
alternate (A B A B) in one sitting. Figures are medians [min-max] over the rounds.

Driver, both systems: ``asyncio.gather`` of all N enqueues (or starts), then
``asyncio.gather`` of all N results (the driver of (b)). The time is from the first enqueue
to the last result. The queue's overhead per workflow is, per round,
``(queue seconds - plain seconds) / N``; plain ``run_async`` runs all N at once.

evflow runs with its default durability, ``strict``; its PostgreSQL store is a fresh schema
in database ``test`` (dropped after), DBOS's system database a fresh database on the same
server (dropped after). File-store directories are deleted when this driver exits, not
between measurements (see _common.discard).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import DISCARD_ENV, discard, emit, fig, parse_results, tmp_root  # noqa: E402

SYSTEM = "evflow"
CONCURRENCY = 50
WARMUP = 50
DSN = os.environ.get("EVFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# -- one evflow measurement (a child process) --------------------------------------------------


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def one(kind: str, store: str, n: int, dsn: str) -> dict[str, Any]:
    from evflow_steps import ainc

    import evflow

    # Declared only in the queue's processes: plain run_async is measured in an engine with
    # no queue declared, as an application without queues has it.
    queue = evflow.Queue("bench-q", concurrency=CONCURRENCY) if kind == "queue" else None

    async def start(i: int) -> evflow.WorkflowHandle:
        node = ainc.step(i)
        if queue is not None:
            return await queue.enqueue(node, workflow_id=f"w-{i}")
        return await node.run_async(f"w-{i}")

    async def batch(first: int, count: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*(start(i) for i in range(first, first + count)))
        t_started = time.perf_counter()
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - t0
        assert results == [i + 1 for i in range(first, first + count)]
        return elapsed, t_started - t0

    schema = None
    if store == "file":
        os.makedirs(tmp_root(), exist_ok=True)
        storage = tempfile.mkdtemp(prefix="evflow-q-", dir=tmp_root())
        discard(storage)
    else:
        schema = f"evflow_bench_{uuid.uuid4().hex[:12]}"
        storage = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    try:
        async with evflow.Engine(storage):
            await batch(10**9, WARMUP)  # warm-up, same store
            seconds, started = await batch(0, n)
    finally:
        if schema is not None:
            await _drop_schema(dsn, schema)
    return {"seconds": seconds, "started_s": started, "enqueue": "gather"}


# -- the driver --------------------------------------------------------------------------------


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        #: (system, key) -> per-round records of the children
        self.records: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "EVFLOW_BENCH_TMP": tmp_root()}
        if DISCARD_ENV not in os.environ:
            # The children hand their store directories to this process, which deletes them
            # when every measurement is done.
            os.makedirs(tmp_root(), exist_ok=True)
            fd, handoff = tempfile.mkstemp(prefix="discard-", suffix=".txt", dir=tmp_root())
            os.close(fd)
            self.env[DISCARD_ENV] = handoff
            atexit.register(self._delete_discarded, handoff)

    @staticmethod
    def _delete_discarded(handoff: str) -> None:
        with open(handoff) as f:
            for path in dict.fromkeys(f.read().splitlines()):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
        os.unlink(handoff)

    def child(self, label: str, cmd: list[str]) -> None:
        print(f"[queues] {label} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        recs = parse_results(proc.stdout)
        for rec in recs:
            self.records.setdefault((rec["system"], rec["key"]), []).append(rec)
        wps = ", ".join(f"{r['values'][0]:,.0f} wf/s" for r in recs)
        print(f"[queues] {label}: {wps} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)

    def run(self) -> None:
        a = self.args
        stores = [s for s in a.stores.split(",") if s]
        polls = [float(p) for p in a.dbos_poll.split(",") if p]
        dbos_python = None
        if not a.skip_peers:
            from _venvs import ensure_venv

            dbos_python = str(ensure_venv("dbos", log=lambda m: print(m, file=sys.stderr)))
        me = [sys.executable, str(Path(__file__).resolve())]
        for r in range(a.runs):
            for store in stores:
                for kind in ("plain", "queue"):
                    self.child(
                        f"round {r + 1}/{a.runs} evflow {store} {kind}",
                        [*me, "one", "--kind", kind, "--store", store, "--n", str(a.n), "--dsn", a.dsn],
                    )
            if dbos_python is not None:
                peer = [dbos_python, str(HERE / "peer_dbos_queues.py"), "--n", str(a.n), "--dsn", a.dsn]
                self.child(f"round {r + 1}/{a.runs} dbos postgres plain", [*peer, "--kind", "plain"])
                for poll in polls:
                    self.child(
                        f"round {r + 1}/{a.runs} dbos postgres queue (poll {poll:g} s)",
                        [*peer, "--kind", "queue", "--poll", str(poll)],
                    )
        self.report(stores, polls if dbos_python else [])

    def values(self, system: str, key: str) -> list[float]:
        return [rec["values"][0] for rec in self.records.get((system, key), [])]

    def report(self, stores: list[str], polls: list[float]) -> None:
        n = self.args.n
        rows: list[tuple[str, str, str]] = []
        ratios: list[tuple[str, list[float]]] = []

        def overhead(system: str, plain_key: str, queue_key: str) -> list[float]:
            plain = self.records.get((system, plain_key), [])
            queued = self.records.get((system, queue_key), [])
            return [(q["seconds"] - p["seconds"]) / n * 1e6 for p, q in zip(plain, queued, strict=False)]

        for store in stores:
            plain, queue = self.values(SYSTEM, f"i.plain.{store}"), self.values(SYSTEM, f"i.queue.{store}")
            emit(SYSTEM, f"i.plain.{store}", plain, "workflows/s", higher_is_better=True, n=n)
            emit(SYSTEM, f"i.queue.{store}", queue, "workflows/s", higher_is_better=True, n=n)
            over = overhead(SYSTEM, f"i.plain.{store}", f"i.queue.{store}")
            emit(SYSTEM, f"i.overhead_us.{store}", over, "us/workflow", higher_is_better=False, n=n)
            enq = [rec["started_s"] / n * 1e6 for rec in self.records[(SYSTEM, f"i.queue.{store}")]]
            emit(SYSTEM, f"i.enqueue_us.{store}", enq, "us/workflow", higher_is_better=False, n=n, info=True)
            rows += [
                (f"evflow {store}: plain run_async", fig(plain), "workflows/s"),
                (f"evflow {store}: queue, concurrency {CONCURRENCY}", fig(queue), "workflows/s"),
                (f"evflow {store}: queue overhead", fig(over), "us/workflow"),
                (f"evflow {store}: all enqueued (durable PENDING)", fig(enq), "us/workflow"),
            ]
        if polls:
            plain = self.values("dbos", "i.plain.postgres")
            emit("dbos", "i.plain.postgres", plain, "workflows/s", higher_is_better=True, n=n)
            rows.append(("DBOS postgres: plain start_workflow_async", fig(plain), "workflows/s"))
            for poll in polls:
                key = f"i.queue.postgres.poll{poll:g}"
                queue = self.values("dbos", key)
                over = overhead("dbos", "i.plain.postgres", key)
                emit("dbos", key, queue, "workflows/s", higher_is_better=True, n=n, poll=poll)
                emit(
                    "dbos",
                    f"i.overhead_us.postgres.poll{poll:g}",
                    over,
                    "us/workflow",
                    higher_is_better=False,
                )
                rows += [
                    (
                        f"DBOS postgres: queue, concurrency {CONCURRENCY}, poll {poll:g} s",
                        fig(queue),
                        "workflows/s",
                    ),
                    (f"DBOS postgres: queue overhead, poll {poll:g} s", fig(over), "us/workflow"),
                ]
                if "postgres" in stores:
                    ours = self.values(SYSTEM, "i.queue.postgres")
                    ratios.append(
                        (f"evflow postgres queue / DBOS queue (poll {poll:g} s)", _per_round(ours, queue))
                    )
            if "postgres" in stores:
                ours = self.values(SYSTEM, "i.plain.postgres")
                ratios.append(("evflow postgres plain / DBOS plain", _per_round(ours, plain)))
            if "file" in stores and polls:
                ours = self.values(SYSTEM, "i.queue.file")
                theirs = self.values("dbos", f"i.queue.postgres.poll{polls[0]:g}")
                ratios.append(
                    (f"evflow file queue / DBOS queue (poll {polls[0]:g} s)", _per_round(ours, theirs))
                )
        for label, per_round in ratios:
            emit("ratio", label, per_round, "x", higher_is_better=True)

        width = max(len(r[0]) for r in rows + [(lbl, "", "") for lbl, _ in ratios])
        print(f"\n(i) queues: {n:,} workflows of 1 async step, median [min-max] of {self.args.runs} rounds")
        for label, value, unit in rows:
            print(f"  {label:<{width}}  {value:<26} {unit}")
        if ratios:
            print("ratios, per round (> 1 = evflow faster); median [min-max]:")
            for label, per_round in ratios:
                print(f"  {label:<{width}}  {fig(per_round):<26} x")
        print(f"load average at end {os.getloadavg()}")


def _per_round(ours: list[float], theirs: list[float]) -> list[float]:
    return [o / t for o, t in zip(ours, theirs, strict=False) if t]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "one"])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="file,postgres", help="evflow stores: file, postgres")
    parser.add_argument(
        "--dsn", default=DSN, help="the PostgreSQL server (and database for evflow's schemas)"
    )
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--dbos-poll",
        default="1",
        help="DBOS queue polling_interval_sec values, comma-separated (default: 1)",
    )
    parser.add_argument("--kind", choices=["plain", "queue"])
    parser.add_argument("--store", choices=["file", "postgres"])
    args = parser.parse_args()
    if args.mode == "one":
        out = asyncio.run(one(args.kind, args.store, args.n, args.dsn))
        key = f"i.{args.kind}.{args.store}"
        emit(SYSTEM, key, [args.n / out["seconds"]], "workflows/s", higher_is_better=True, n=args.n, **out)
        return
    Driver(args).run()


if __name__ == "__main__":
    main()
