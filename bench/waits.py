"""(i) waits (issue 16): a 3-step workflow with a durable ``sleep(0)`` and a message
round trip, on evflow's file store and PostgreSQL, against DBOS on SQLite and PostgreSQL,
in one run.

    .venv/bin/python bench/waits.py                       # --runs 3, evflow and DBOS
    .venv/bin/python bench/waits.py --runs 5 --n-gather 1000
    .venv/bin/python bench/waits.py --skip-peers          # evflow only
    .venv/bin/python bench/waits.py --stores file         # no server needed (DBOS on SQLite)

The workflow, the same on both sides: step ``first(i)``, a durable sleep of 0 s, step
``second``, a wait for a message on topic ``"go"``, step ``third(message)``; its output is
``i + 2 + message``. evflow: ``first`` continues as ``second.step(evflow.sleep(0), ...)``,
which continues as ``third.step(evflow.wait_for_event("go"), ...)``. DBOS:
``DBOS.sleep_async(0)`` and ``DBOS.recv_async("go")`` between the three ``@DBOS.step``
calls of one ``@DBOS.workflow``.

The client of each workflow starts it, sends it the message (``evflow.send`` /
``DBOS.send_async``, each durable before it returns), and awaits its output. Two patterns:
``seq``: one workflow after the other (``--n-seq``, a latency figure), and ``gather``:
``asyncio.gather`` of ``--n-gather`` such clients at once (throughput).

Each measurement is a process of its own (``waits.py one ...`` for evflow,
``peer_dbos_waits.py`` in the dbos venv): a fresh store, an untimed warm-up of 20
workflows, then the timed ones. A round measures every (system, store, pattern) once,
evflow and DBOS taking turns, ``--runs`` rounds (A B A B). Figures are medians [min-max]
over the rounds, ratios per round. Durability: evflow's default (``strict``: every
acknowledged event is fsynced / committed); DBOS's default (every step and message is a
committed database write). evflow's PostgreSQL store is a fresh schema in database
``test``, DBOS's system database a fresh database on the same server (both dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import emit, fig, parse_results, tmp_root  # noqa: E402

SYSTEM = "evflow"
WARMUP = 20
DSN = os.environ.get("EVFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: (evflow store, the DBOS system database it is compared with)
PAIRS = {"file": "sqlite", "postgres": "postgres"}


# -- one evflow measurement (a child process) --------------------------------------------------


def _workflow() -> Any:
    import evflow

    @evflow.step(name="waits.third")
    async def third(message: int, x: int) -> int:
        return x + message

    @evflow.step(name="waits.second")
    async def second(_slept: Any, x: int) -> evflow.Node:
        return third.step(evflow.wait_for_event("go"), x + 1)

    @evflow.step(name="waits.first")
    async def first(i: int) -> evflow.Node:
        return second.step(evflow.sleep(0), i + 1)

    return first


async def one(store: str, pattern: str, n: int, dsn: str) -> float:
    """Seconds for ``n`` workflows of ``pattern`` on a fresh store (after a warm-up)."""
    import evflow

    first = _workflow()

    async def client(i: int) -> None:
        wid = f"w-{i}"
        handle = await first.step(i).run_async(wid)
        await evflow.send(wid, "go", 1)
        assert await handle.result() == i + 3

    async def batch(start: int, count: int) -> float:
        t0 = time.perf_counter()
        if pattern == "seq":
            for i in range(start, start + count):
                await client(i)
        else:
            await asyncio.gather(*(client(i) for i in range(start, start + count)))
        return time.perf_counter() - t0

    schema = None
    if store == "file":
        os.makedirs(tmp_root(), exist_ok=True)
        storage = tempfile.mkdtemp(prefix="evflow-w-", dir=tmp_root())
    else:
        schema = f"evflow_bench_{uuid.uuid4().hex[:12]}"
        storage = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    try:
        async with evflow.Engine(storage):
            await batch(10**9, WARMUP)
            return await batch(0, n)
    finally:
        if schema is not None:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        else:
            import shutil

            shutil.rmtree(storage, ignore_errors=True)


# -- the driver --------------------------------------------------------------------------------


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        #: (system, key) -> one value per round
        self.values: dict[tuple[str, str], list[float]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "EVFLOW_BENCH_TMP": tmp_root()}

    def child(self, label: str, cmd: list[str]) -> None:
        import subprocess

        print(f"[waits] {label} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if proc.returncode != 0:
            sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        for rec in parse_results(proc.stdout):
            self.values.setdefault((rec["system"], rec["key"]), []).append(rec["values"][0])
            print(f"[waits] {label}: {rec['values'][0]:,.1f} wf/s", file=sys.stderr, flush=True)

    def run(self) -> None:
        a = self.args
        stores = [s for s in a.stores.split(",") if s]
        dbos_python = None
        if not a.skip_peers:
            from _venvs import ensure_venv

            dbos_python = str(ensure_venv("dbos", log=lambda m: print(m, file=sys.stderr)))
        me = [sys.executable, str(Path(__file__).resolve())]
        sizes = {"seq": a.n_seq, "gather": a.n_gather}
        for r in range(a.runs):
            for store in stores:
                for pattern, n in sizes.items():
                    args = ["--pattern", pattern, "--n", str(n), "--dsn", a.dsn]
                    ours = [*me, "one", "--store", store, *args]
                    self.child(f"round {r + 1} evflow {store} {pattern}", ours)
                    if dbos_python is not None:
                        peer = [dbos_python, str(HERE / "peer_dbos_waits.py"), "--db", PAIRS[store], *args]
                        self.child(f"round {r + 1} dbos {PAIRS[store]} {pattern}", peer)
        self.report(stores, sizes, dbos_python is not None)

    def report(self, stores: list[str], sizes: dict[str, int], peers: bool) -> None:
        print(
            f"\n(i) waits: 3 steps + sleep(0) + a message round trip per workflow, "
            f"workflows/s, median [min-max] of {self.args.runs} rounds"
        )
        for store in stores:
            for pattern, n in sizes.items():
                key = f"i.waits.{pattern}"
                ours = self.values[(SYSTEM, f"{key}.{store}")]
                emit(SYSTEM, f"{key}.{store}", ours, "workflows/s", higher_is_better=True, n=n)
                line = f"  evflow {store:<8} {pattern:<6} (n={n:<5}) {fig(ours):<24}"
                if peers:
                    db = PAIRS[store]
                    theirs = self.values[("dbos", f"{key}.{db}")]
                    emit("dbos", f"{key}.{db}", theirs, "workflows/s", higher_is_better=True, n=n)
                    ratio = [o / t for o, t in zip(ours, theirs, strict=True)]
                    emit("ratio", f"{key}.{store}/{db}", ratio, "x", higher_is_better=True)
                    line += f"  DBOS {db:<8} {fig(theirs):<24}  evflow/DBOS per round {fig(ratio)}x"
                print(line)
        print(f"load average at end {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "one"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-seq", type=int, default=200, help="workflows one after the other")
    parser.add_argument("--n-gather", type=int, default=500, help="workflows at once")
    parser.add_argument("--stores", default="file,postgres", help="evflow stores: file, postgres")
    parser.add_argument("--dsn", default=DSN, help="the PostgreSQL server (and database for schemas)")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--store", choices=list(PAIRS))
    parser.add_argument("--pattern", choices=["seq", "gather"])
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if args.mode == "one":
        seconds = asyncio.run(one(args.store, args.pattern, args.n, args.dsn))
        key = f"i.waits.{args.pattern}.{args.store}"
        emit(SYSTEM, key, [args.n / seconds], "workflows/s", higher_is_better=True, n=args.n, seconds=seconds)
        return
    Driver(args).run()


if __name__ == "__main__":
    main()
