"""PostgreSQL and several engines (issue 13): evflow on a PostgreSQL store against DBOS with
its system database on the same PostgreSQL server, in one run.

    .venv/bin/python bench/scale_out.py                 # --runs 3, everything, evflow and DBOS
    .venv/bin/python bench/scale_out.py --quick         # 1 round, smaller sizes (~2 min)
    .venv/bin/python bench/scale_out.py --only fanout --procs 1,2 --runs 5
    .venv/bin/python bench/scale_out.py --skip-peers    # evflow only
    .venv/bin/python bench/scale_out.py --only b --n-b 200,2000 --runs 3

What is measured, each a process (or processes) of its own on a fresh store:

1. ``seq``: one workflow of N (500) sequential trivial steps, steps/s. evflow: a chain of
   continuations and a static N-deep DAG, sync and async steps; DBOS: one workflow calling
   a ``@DBOS.step`` N times in a loop, sync and async. Before each round, the commit floor:
   single-row INSERTs, autocommit, one after the other on one asyncpg connection, 0.5 s.
b. ``b``: issue 16's (b) on one engine: 200 and 2,000 workflows of 3 async steps, started
   by one ``asyncio.gather`` of ``run_async`` (DBOS: ``start_workflow_async``) and then
   awaited, and started one after the other (each start awaited, then each result), as
   ``bench/run.py``'s (b) does on the file store; workflows/s, after 50 of warm-up each.
2. ``fanout``: N (2,000) workflows of 3 async steps, started by P = 1, 2, 4 processes, each
   with its own engine id (evflow: ``Engine(url, engine_id=...)``; DBOS: ``executor_id``)
   and 1/P of the workflows: ``asyncio.gather`` of its ``run_async`` (DBOS:
   ``start_workflow_async``) calls, then of the results. Every process launches and warms
   up (50 workflows), then all get "go" at once; total workflows/s = N / (last end - first
   go). Meanwhile the driver samples CPU: the machine's busy time (/proc/stat), the child
   processes' own (getrusage in each), the PostgreSQL backends that serve them (their
   /proc/<pid>/stat; evflow's are found by ``application_name``, DBOS's by database) and
   the rest of the postgres processes (WAL writer, checkpointer, other users' backends).
3. ``recovery``: a victim process starts K (200) workflows ``inc -> nap -> inc`` whose
   ``nap`` hangs; once all K are in ``nap`` it is SIGKILLed. evflow: an ``evflow worker``
   (``Engine(recover=True)``, default ``recovery_interval=5.0``) was already running on the
   store; it finds the dead engine's workflows and takes them over. "Resumed" = the
   ``WorkflowStarted(resume=True)`` naming the worker as owner, in each log (its ``time``);
   "finished" = each ``WorkflowFinished``. DBOS has no failure detector without Conductor:
   a live executor (already launched, its own executor id) is told right after the kill to
   recover the dead executor id's workflows, ``DBOS._recover_pending_workflows([id])``
   (what DBOS's admin API recovery endpoint and Conductor call); that re-enqueues them on
   DBOS's internal queue, which the live executor's queue thread dequeues. "Resumed" =
   the dequeue (``workflow_status.started_at_epoch_ms``, executor id = the live one),
   "finished" = ``updated_at`` of the SUCCESS row. So DBOS's figure has no detection time
   in it and evflow's has its own (a scan every second). Also measured for DBOS: a restart
   with the dead executor's id (DBOS's default self-hosted recovery), from the kill, which
   includes starting the process. After the kill a nap sleeps ``--nap`` s (0.5).

A round measures every (part, size) for evflow and then for DBOS (A B A B ...); ``--runs``
rounds; figures are medians [min-max] over the rounds, ratios are per round. evflow runs
with its default durability, ``strict`` (a step's output is committed before anything
after it runs); PostgreSQL with ``synchronous_commit=on``, so every commit waits for its
WAL flush. evflow's store is ``postgresql://...?schema=<fresh>`` in database ``test``
(dropped after); DBOS's system database a fresh database on the same server (dropped
after). The child processes' stderr goes to ``bench/results/logs/scale-<time>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import MARK, emit  # noqa: E402

DSN = os.environ.get("EVFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
WARMUP = 50
#: application_name of evflow's connections in this benchmark (to find their backends).
APP = "evbench_scale"
HZ = os.sysconf("SC_CLK_TCK")
EVFLOW_WORKER = [sys.executable, "-m", "evflow"]


# -- evflow child processes ---------------------------------------------------------------------


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seq_node(shape: str, flavour: str, n: int) -> Any:
    from evflow_steps import achain, ainc, chain, inc

    if shape == "chain":
        return (chain if flavour == "sync" else achain).step(1, n)
    fn = inc if flavour == "sync" else ainc
    node = fn.step(0)
    for _ in range(n - 1):
        node = fn.step(node)
    return node


async def child_seq(url: str, n: int) -> None:
    import evflow

    async with evflow.Engine(url):
        for shape in ("chain", "dag"):
            for flavour in ("sync", "async"):
                assert await seq_node(shape, flavour, 20).run(f"warm-{shape}-{flavour}") == 20
        for shape in ("chain", "dag"):
            for flavour in ("sync", "async"):
                node = seq_node(shape, flavour, n)
                c0, t0 = cpu_seconds(), time.perf_counter()
                value = await node.run(f"s-{shape}-{flavour}")
                seconds = time.perf_counter() - t0
                assert value == n, value
                cpu_us = (cpu_seconds() - c0) / n * 1e6
                emit(
                    "evflow",
                    f"s.{shape}.{flavour}",
                    [n / seconds],
                    "steps/s",
                    higher_is_better=True,
                    cpu_us=cpu_us,
                )


async def child_fanout(url: str, n: int, engine_id: str) -> None:
    import anyio
    from evflow_steps import ainc

    import evflow

    async def batch(prefix: str, count: int) -> None:
        handles = await asyncio.gather(
            *(ainc.step(ainc.step(ainc.step(i))).run_async(f"{prefix}-{i}") for i in range(count))
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        assert results == [i + 3 for i in range(count)]

    async with evflow.Engine(url, engine_id=engine_id):
        await batch(f"{engine_id}-warm", WARMUP)
        say("READY")
        await anyio.to_thread.run_sync(sys.stdin.readline)
        c0, t_go = cpu_seconds(), time.time()
        await batch(engine_id, n)
        t_end = time.time()
        seconds = t_end - t_go
        emit(
            "evflow",
            "s.fanout.one",
            [n / seconds],
            "workflows/s",
            higher_is_better=True,
            t_go=t_go,
            t_end=t_end,
            cpu_s=cpu_seconds() - c0,
            n=n,
        )
        await anyio.to_thread.run_sync(sys.stdin.readline)


async def child_b(url: str, sizes: list[int]) -> None:
    # The same drivers as bench/run.py's (b) on the file store.
    from evflow_work import run_many, run_serial

    import evflow

    async with evflow.Engine(url) as engine:
        for pattern, fn in (("gathered", run_many), ("serial", run_serial)):
            await fn(WARMUP, engine, f"warm-{pattern}")
            for n in sizes:
                rate = await fn(n, engine, f"b-{pattern}-{n}")
                emit("evflow", f"s.b.{n}.{pattern}", [rate], "workflows/s", higher_is_better=True)


async def child_victim(url: str, k: int, engine_id: str) -> None:
    import anyio
    from evflow_steps import ainc, nap

    import evflow

    async with evflow.Engine(url, engine_id=engine_id):
        await asyncio.gather(*(ainc.step(nap.step(ainc.step(i))).run_async(f"k-{i}") for i in range(k)))
        await anyio.sleep_forever()  # until SIGKILL


# -- the driver: PostgreSQL, processes, CPU -----------------------------------------------------


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def with_params(dsn: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


def sql(dsn: str, statement: str, *args: Any) -> list[Any]:
    """Run one statement on a new connection; its rows."""
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "evbench_driver"})
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def commit_floor(dsn: str, seconds: float = 0.5) -> float:
    """Commits/s of single-row INSERTs, autocommit, one after the other (one connection)."""
    import asyncpg

    async def go() -> float:
        schema = f"evbench_floor_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "evbench_driver"})
        try:
            await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (i int)")
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                await conn.execute(f"INSERT INTO {schema}.t VALUES ($1)", count)
                count += 1
            rate = count / (time.perf_counter() - t0)
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            return rate
        finally:
            await conn.close()

    return asyncio.run(go())


def proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores; /proc/stat)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle, iowait
    return (sum(parts[:8]) - idle) / HZ


class CpuWindow:
    """CPU seconds spent between ``start`` and ``stop``: the machine, and the postgres
    processes split into ours (pids given at ``stop``) and the others."""

    def start(self) -> None:
        self.t0 = time.time()
        self.busy0 = machine_busy()
        self.pg0 = {pid: proc_cpu(pid) or 0.0 for pid in postgres_pids()}

    def stop(self, ours: set[int]) -> dict[str, float]:
        wall = time.time() - self.t0
        busy = machine_busy() - self.busy0
        mine = other = 0.0
        for pid in postgres_pids():
            now = proc_cpu(pid)
            if now is None:
                continue
            used = now - self.pg0.get(pid, 0.0)
            if pid in ours:
                mine += used
            else:
                other += used
        return {"wall": wall, "machine": busy, "pg_ours": mine, "pg_other": other}


def backend_pids(*, app: str | None = None, database: str | None = None) -> set[int]:
    rows = sql(
        DSN,
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1 OR datname = $2",
        f"{app}%" if app else "\x01",
        database or "\x01",
    )
    return {r[0] for r in rows}


def read_until(stream: IO[str], prefix: str, proc: subprocess.Popen[str], log: Path) -> str:
    """The child's next stdout line starting with ``prefix`` (others are skipped)."""
    while True:
        line = stream.readline()
        if not line:
            proc.wait()
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"a child exited ({proc.returncode}) before printing {prefix!r}:\n{tail}")
        if line.startswith(prefix):
            return line.rstrip("\n")


def result_of(line: str) -> dict[str, Any]:
    import json

    return dict(json.loads(line[len(MARK) :]))


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = HERE / "results" / "logs" / f"scale-{stamp}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        self.me = [sys.executable, str(Path(__file__).resolve())]
        self.dbos: list[str] | None = None
        #: (system, key) -> one record per round
        self.records: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.serial = 0

    def note(self, message: str) -> None:
        print(f"[scale] {message}", file=sys.stderr, flush=True)

    def add(self, system: str, key: str, record: dict[str, Any]) -> None:
        self.records.setdefault((system, key), []).append(record)

    def log(self, label: str) -> Path:
        self.serial += 1
        return self.log_dir / f"{self.serial:03d}-{label}.log"

    def spawn(self, label: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> Any:
        log = self.log(label)
        err = log.open("w")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**self.env, **(extra_env or {})},
            start_new_session=True,
        )
        err.close()
        proc.log = log  # type: ignore[attr-defined]
        return proc

    def run_child(self, label: str, cmd: list[str]) -> list[dict[str, Any]]:
        log = self.log(label)
        with log.open("w") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        return [result_of(line) for line in proc.stdout.splitlines() if line.startswith(MARK)]

    # -- fresh stores -----------------------------------------------------------------------

    @contextlib.contextmanager
    def evflow_store(self) -> Iterator[tuple[str, str]]:
        """(storage URL, schema) of a fresh schema, dropped after."""
        schema = f"evbench_scale_{uuid.uuid4().hex[:10]}"
        try:
            yield with_params(DSN, application_name=APP, schema=schema), schema
        finally:
            sql(DSN, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    @contextlib.contextmanager
    def dbos_database(self) -> Iterator[tuple[str, str]]:
        """(system database URL, database name) of a fresh database, dropped after."""
        database = f"dbos_scale_{uuid.uuid4().hex[:10]}"
        sql(DSN, f'CREATE DATABASE "{database}"')
        try:
            yield with_database(DSN, database), database
        finally:
            sql(DSN, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    # -- (1) sequential steps -----------------------------------------------------------------

    def seq(self, r: int) -> None:
        a = self.args
        floor = commit_floor(DSN)
        self.add("pg", "floor", {"value": floor})
        self.note(f"round {r}: PostgreSQL commit floor {floor:,.0f} commits/s")
        with self.evflow_store() as (url, _):
            recs = self.run_child(f"evflow-seq-r{r}", [*self.me, "seq", "--url", url, "--n", str(a.n_seq)])
        for rec in recs:
            self.add("evflow", rec["key"], rec)
        self.note(f"round {r}: evflow seq " + ", ".join(f"{x['key']} {x['values'][0]:,.0f}" for x in recs))
        if self.dbos:
            with self.dbos_database() as (db, _):
                cmd = [*self.dbos, "seq", "--db", db, "--n", str(a.n_seq), "--executor", "seq"]
                recs = self.run_child(f"dbos-seq-r{r}", cmd)
            for rec in recs:
                self.add("dbos", rec["key"], rec)
            self.note(f"round {r}: DBOS seq " + ", ".join(f"{x['key']} {x['values'][0]:,.0f}" for x in recs))

    # -- (b) on one engine: gathered, and each start awaited in turn --------------------------

    def b(self, r: int) -> None:
        sizes = ",".join(str(n) for n in self.args.n_b)
        with self.evflow_store() as (url, _):
            recs = self.run_child(f"evflow-b-r{r}", [*self.me, "b", "--url", url, "--sizes", sizes])
        for rec in recs:
            self.add("evflow", rec["key"], rec)
        self.note(f"round {r}: evflow b " + ", ".join(f"{x['key']} {x['values'][0]:,.0f}" for x in recs))
        if self.dbos:
            with self.dbos_database() as (db, _):
                cmd = [*self.dbos, "b", "--db", db, "--sizes", sizes, "--executor", "b"]
                recs = self.run_child(f"dbos-b-r{r}", cmd)
            for rec in recs:
                self.add("dbos", rec["key"], rec)
            self.note(f"round {r}: DBOS b " + ", ".join(f"{x['key']} {x['values'][0]:,.1f}" for x in recs))

    # -- (2) fan-out over P processes ---------------------------------------------------------

    def fanout(self, r: int, procs: int) -> None:
        with self.evflow_store() as (url, _):

            def evflow_cmd(i: int) -> list[str]:
                eid = f"fan-{procs}-{i}"
                share = str(self.args.n_fan // procs)
                return [*self.me, "fanout", "--url", url, "--n", share, "--engine-id", eid]

            self._fanout_round(r, "evflow", procs, evflow_cmd, lambda: backend_pids(app=APP))
        if self.dbos:
            dbos = self.dbos
            with self.dbos_database() as (db, database):

                def dbos_cmd(i: int) -> list[str]:
                    share = str(self.args.n_fan // procs)
                    return [*dbos, "fanout", "--db", db, "--n", share, "--executor", f"fan-{procs}-{i}"]

                self._fanout_round(r, "dbos", procs, dbos_cmd, lambda: backend_pids(database=database))

    def _fanout_round(self, r: int, system: str, procs: int, cmd: Any, ours: Any) -> None:
        children: list[Any] = []
        try:
            for i in range(procs):
                # The first one creates the schema (tables, DBOS's migrations) alone.
                children.append(self.spawn(f"{system}-fanout{procs}-{i}-r{r}", cmd(i)))
                if i == 0:
                    read_until(children[0].stdout, "READY", children[0], children[0].log)
            for child in children[1:]:
                read_until(child.stdout, "READY", child, child.log)
            window = CpuWindow()
            window.start()
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [result_of(read_until(c.stdout, MARK, c, c.log)) for c in children]
            cpu = window.stop(ours())
            for child in children:
                child.stdin.write("exit\n")
                child.stdin.flush()
            for child in children:
                child.wait(timeout=120)
        finally:
            for child in children:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
        n = sum(rec["n"] for rec in results)
        wall = max(rec["t_end"] for rec in results) - min(rec["t_go"] for rec in results)
        clients = sum(rec["cpu_s"] for rec in results)
        record = {"value": n / wall, "n": n, "wall": wall, "clients_cpu": clients, **cpu}
        self.add(system, f"fanout.{procs}", record)
        w = cpu["wall"]
        self.note(
            f"round {r}: {system} fan-out, {procs} process(es): {n / wall:,.0f} workflows/s "
            f"(cores busy: machine {cpu['machine'] / w:.2f}, clients {clients / w:.2f}, "
            f"their backends {cpu['pg_ours'] / w:.2f}, other postgres {cpu['pg_other'] / w:.2f})"
        )

    # -- (3) recovery of a killed worker ------------------------------------------------------

    def _kill_victim(self, label: str, cmd: list[str], kill_file: Path) -> float:
        """Start the victim, SIGKILL its process group once all K are in flight; the kill time."""
        env = {"EVBENCH_NAP_HANG_AFTER": str(self.args.k), "EVBENCH_KILL_FILE": str(kill_file)}
        victim = self.spawn(label, cmd, env)
        victim.stdin.close()
        deadline = time.monotonic() + 300
        try:
            while not kill_file.exists():
                if victim.poll() is not None:
                    raise RuntimeError(f"the victim exited early:\n{victim.log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the victim did not get all its workflows in flight in 300 s")
                time.sleep(0.005)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGKILL)
            t_kill = time.time()
            victim.wait()
            victim.stdout.close()
        return t_kill

    @staticmethod
    def _wait_count(dsn: str, query: str, k: int, timeout: float = 300) -> None:
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "evbench_driver"})
            try:
                deadline = time.monotonic() + timeout
                while await conn.fetchval(query) < k:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not all {k} workflows finished in {timeout} s")
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()

        asyncio.run(go())

    def recovery(self, r: int) -> None:
        """evflow (first interval), DBOS live executor, evflow (other intervals), DBOS restart."""
        intervals = self.args.recovery_intervals
        self._evflow_recovery(r, intervals[0])
        if self.dbos:
            self._dbos_recovery(r, live=True)
        for interval in intervals[1:]:
            self._evflow_recovery(r, interval)
        if self.dbos:
            self._dbos_recovery(r, live=False)

    def _evflow_recovery(self, r: int, interval: float) -> None:
        a = self.args
        tag = f"i{interval:g}-r{r}"
        with self.evflow_store() as (url, schema):
            rec_id, victim_id = f"rec-{tag}", f"victim-{tag}"
            cmd = [*EVFLOW_WORKER, "--storage", url, "worker", "--import", "evflow_steps"]
            cmd += ["--engine-id", rec_id, "--recovery-interval", str(interval)]
            worker = self.spawn(f"evflow-worker-{tag}", cmd, {"EVBENCH_NAP_SECONDS": str(a.nap)})
            try:
                deadline = time.monotonic() + 60
                while "serving" not in worker.log.read_text(errors="replace"):
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"evflow worker did not start:\n{worker.log.read_text()[-3000:]}")
                    time.sleep(0.02)
                kill_file = self.log_dir / f"killed-evflow-{tag}"
                victim = [*self.me, "victim", "--url", url, "--k", str(a.k), "--engine-id", victim_id]
                t_kill = self._kill_victim(f"evflow-victim-{tag}", victim, kill_file)
                finished = f"SELECT count(*) FROM \"{schema}\".events WHERE type = 'WorkflowFinished'"
                self._wait_count(DSN, finished, a.k)
                t_seen = time.time()
                record = asyncio.run(self._evflow_recovery_times(schema, rec_id, t_kill))
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
        record["seen"] = t_seen - t_kill
        self.add("evflow", f"recovery.i{interval:g}", record)
        self.note(
            f"round {r}: evflow recovery (recovery_interval={interval:g}) of {a.k}: all resumed "
            f"{record['resumed']:.3f} s, all finished {record['finished']:.3f} s after the kill "
            f"(first resume {record['first']:.3f} s)"
        )

    async def _evflow_recovery_times(self, schema: str, owner: str, t_kill: float) -> dict[str, Any]:
        """From the logs: each workflow's resume claim (exactly one, by ``owner``) and end;
        the first step must not have run again."""
        import evflow
        from evflow.events import StepStarted, WorkflowFinished, WorkflowStarted

        store = evflow.stores.PostgresStore(DSN, schema=schema, read_only=True)
        await store.open()
        try:
            logs = await store.read_all()
        finally:
            await store.close()
        resumed, finished = [], []
        for wid, events in logs.items():
            assert not isinstance(events, Exception), (wid, events)
            claims = [e for e in events if isinstance(e, WorkflowStarted) and e.resume]
            assert len(claims) == 1 and claims[0].owner == owner, (wid, claims)
            # Only the nap may have started twice: the victim was killed in it (its first
            # StepStarted may not have been committed yet, so once is fine too).
            starts = [e.name for e in events if isinstance(e, StepStarted) and e.name != "evflow_steps.nap"]
            assert len(starts) == len(set(starts)) == 2, (wid, starts)
            ends = [e for e in events if isinstance(e, WorkflowFinished)]
            assert len(ends) == 1, (wid, ends)
            resumed.append(claims[0].time - t_kill)
            finished.append(ends[0].time - t_kill)
        assert len(resumed) == self.args.k, len(resumed)
        return {
            "resumed": max(resumed),
            "first": min(resumed),
            "finished": max(finished),
        }

    def _dbos_recovery(self, r: int, *, live: bool) -> None:
        a = self.args
        assert self.dbos is not None
        mode = "live" if live else "restart"
        nap_env = {"EVBENCH_NAP_SECONDS": str(a.nap)}
        victim_id = f"victim-{r}"
        rec_id = f"rec-{r}" if live else victim_id
        with self.dbos_database() as (db, _):
            helper = None
            try:
                if live:
                    helper = self.spawn(
                        f"dbos-recoverer-r{r}",
                        [*self.dbos, "recoverer", "--db", db, "--executor", rec_id],
                        nap_env,
                    )
                    read_until(helper.stdout, "READY", helper, helper.log)
                kill_file = self.log_dir / f"killed-dbos-{mode}-r{r}"
                victim = [*self.dbos, "victim", "--db", db, "--k", str(a.k), "--executor", victim_id]
                t_kill = self._kill_victim(f"dbos-victim-{mode}-r{r}", victim, kill_file)
                if live:
                    assert helper is not None
                    helper.stdin.write(f"recover {victim_id}\n")
                    helper.stdin.flush()
                    called = read_until(helper.stdout, "CALLED", helper, helper.log).split()
                    call = {"call_start": float(called[1]) - t_kill, "call_end": float(called[2]) - t_kill}
                    assert int(called[3]) == a.k, called
                else:
                    helper = self.spawn(
                        f"dbos-restart-r{r}",
                        [*self.dbos, "restart", "--db", db, "--executor", rec_id],
                        nap_env,
                    )
                    ready = read_until(helper.stdout, "READY", helper, helper.log).split()
                    call = {"launched": float(ready[1]) - t_kill}
                done = (
                    "SELECT count(*) FROM dbos.workflow_status "
                    "WHERE name LIKE '%napper' AND status = 'SUCCESS'"
                )
                self._wait_count(db, done, a.k)
                t_seen = time.time()
                rows = sql(
                    db,
                    "SELECT executor_id, started_at_epoch_ms, updated_at, status, recovery_attempts "
                    "FROM dbos.workflow_status WHERE name LIKE '%napper'",
                )
                helper.stdin.write("exit\n")
                helper.stdin.flush()
                helper.wait(timeout=60)
            finally:
                if helper is not None and helper.poll() is None:
                    os.killpg(helper.pid, signal.SIGKILL)
                    helper.wait()
        assert len(rows) == a.k and all(row[0] == rec_id and row[3] == "SUCCESS" for row in rows), rows[:3]
        record = {
            "resumed": max(row[1] for row in rows) / 1000 - t_kill,
            "first": min(row[1] for row in rows) / 1000 - t_kill,
            "finished": max(row[2] for row in rows) / 1000 - t_kill,
            "seen": t_seen - t_kill,
            **call,
        }
        self.add("dbos", f"recovery.{mode}", record)
        self.note(
            f"round {r}: DBOS recovery ({mode}) of {a.k}: all resumed {record['resumed']:.3f} s, "
            f"all finished {record['finished']:.3f} s after the kill (first resume {record['first']:.3f} s)"
        )

    # -- the run and its report ---------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        if not a.skip_peers:
            from _venvs import ensure_venv

            python = ensure_venv("dbos", log=lambda m: print(m, file=sys.stderr))
            self.dbos = [str(python), str(HERE / "peer_dbos_scale.py")]
        parts = set(a.only.split(","))
        t0 = time.monotonic()
        load0 = os.getloadavg()
        for r in range(1, a.runs + 1):
            if "seq" in parts:
                self.seq(r)
            if "b" in parts:
                self.b(r)
            if "fanout" in parts:
                for procs in a.procs:
                    self.fanout(r, procs)
            if "recovery" in parts:
                self.recovery(r)
        self.report(parts, time.monotonic() - t0, load0)

    def values(self, system: str, key: str, field: str = "value") -> list[float]:
        recs = self.records.get((system, key), [])
        return [rec["values"][0] if field == "value" and "values" in rec else rec[field] for rec in recs]

    def report(self, parts: set[str], took: float, load0: tuple[float, ...]) -> None:
        a = self.args
        rows: list[tuple[str, str, str, str, str]] = []  # label, evflow, DBOS, ratio, unit

        def row(
            label: str,
            ours: list[float],
            theirs: list[float],
            unit: str,
            *,
            higher: bool = True,
            ratio: bool = True,
        ) -> None:
            text = ""
            if ratio and ours and theirs:
                per_round = [
                    o / t if higher else t / o for o, t in zip(ours, theirs, strict=False) if o and t
                ]
                text = fig(per_round) + "x"
                emit("ratio", label.strip(), per_round, "x", higher_is_better=True)
            rows.append((label, fig(ours), fig(theirs), text, unit))

        if "seq" in parts:
            n = a.n_seq
            for shape, what in (("chain", "chain of continuations"), ("dag", "static DAG")):
                for flavour in ("sync", "async"):
                    ours = self.values("evflow", f"s.{shape}.{flavour}")
                    theirs = self.values("dbos", f"s.seq.{flavour}")
                    row(f"(1) {n} steps, {what}, {flavour} (DBOS: loop)", ours, theirs, "steps/s")
            for shape in ("chain", "dag"):
                for flavour in ("sync", "async"):
                    ours = self.values("evflow", f"s.{shape}.{flavour}", "cpu_us")
                    theirs = self.values("dbos", f"s.seq.{flavour}", "cpu_us")
                    row(
                        f"    client CPU per step, {shape}, {flavour}",
                        ours,
                        theirs,
                        "CPU us/step",
                        ratio=False,
                    )
            row("    PostgreSQL commit floor (1 connection)", self.values("pg", "floor"), [], "commits/s")
        if "b" in parts:
            for pattern, what in (("gathered", "gathered"), ("serial", "each start awaited in turn")):
                for n in a.n_b:
                    key = f"s.b.{n}.{pattern}"
                    row(
                        f"(b) {n:,} workflows x 3 steps, {what}",
                        self.values("evflow", key),
                        self.values("dbos", key),
                        "workflows/s",
                    )
        if "fanout" in parts:
            base = {s: self.values(s, "fanout.1") for s in ("evflow", "dbos")}
            for procs in a.procs:
                key = f"fanout.{procs}"
                ours, theirs = self.values("evflow", key), self.values("dbos", key)
                row(f"(2) {a.n_fan:,} workflows x 3 steps, {procs} process(es)", ours, theirs, "workflows/s")
                if procs != 1:
                    scale = {
                        s: [v / b for v, b in zip(self.values(s, key), base[s], strict=False)] for s in base
                    }
                    row(
                        f"    scaling: {procs} processes / 1",
                        scale["evflow"],
                        scale["dbos"],
                        "x",
                        ratio=False,
                    )
            for procs in a.procs:
                cpu = {s: self.records.get((s, f"fanout.{procs}"), []) for s in ("evflow", "dbos")}

                def cores(recs: list[dict[str, Any]]) -> str:
                    if not recs:
                        return ""
                    parts_ = [
                        median([rec[f] / rec["wall"] for rec in recs])
                        for f in ("machine", "clients_cpu", "pg_ours", "pg_other")
                    ]
                    parts_.append(parts_[0] - sum(parts_[1:]))
                    return " / ".join(f"{x:.2f}" for x in parts_)

                def per_wf(recs: list[dict[str, Any]], field: str) -> list[float]:
                    return [rec[field] / rec["n"] * 1e6 for rec in recs]

                rows.append(
                    (
                        f"    CPU, {procs} proc: machine / clients / their backends / other pg / rest",
                        cores(cpu["evflow"]),
                        cores(cpu["dbos"]),
                        "",
                        "cores (of 2)",
                    )
                )
                for field, what in (("clients_cpu", "clients"), ("pg_ours", "their backends")):
                    ours, theirs = per_wf(cpu["evflow"], field), per_wf(cpu["dbos"], field)
                    row(
                        f"    CPU, {procs} proc: {what} per workflow",
                        ours,
                        theirs,
                        "CPU us/workflow",
                        ratio=False,
                    )
        if "recovery" in parts:
            k = a.k
            main = f"recovery.i{a.recovery_intervals[0]:g}"
            for what, field in (
                ("all resumed", "resumed"),
                ("all finished", "finished"),
                ("first resumed", "first"),
            ):
                ours = self.values("evflow", main, field)
                live = self.values("dbos", "recovery.live", field)
                row(f"(3) {k} in flight, kill -> {what} (DBOS: live executor)", ours, live, "s", higher=False)
            for what, field in (("all resumed", "resumed"), ("all finished", "finished")):
                ours = self.values("evflow", main, field)
                restart = self.values("dbos", "recovery.restart", field)
                row(f"    kill -> {what} (DBOS: restart, same id)", ours, restart, "s", higher=False)
            for interval in a.recovery_intervals[1:]:
                for what, field in (("all resumed", "resumed"), ("all finished", "finished")):
                    ours = self.values("evflow", f"recovery.i{interval:g}", field)
                    live = self.values("dbos", "recovery.live", field)
                    row(
                        f"    evflow recovery_interval={interval:g}: kill -> {what} (DBOS: live)",
                        ours,
                        live,
                        "s",
                        higher=False,
                    )

        for (system, key), recs in sorted(self.records.items()):
            field = "resumed" if key.startswith("recovery") else "value"
            emit(
                system,
                key,
                self.values(system, key, field),
                "",
                higher_is_better=field == "value",
                rounds=recs,
            )
        width = max(len(r[0]) for r in rows)
        heads = ("", "evflow", "DBOS", "evflow/DBOS", "unit")
        cols = [max(len(r[i]) for r in [*rows, heads]) for i in (1, 2, 3)]
        print(
            f"\nPostgreSQL and several engines: median [min-max] of {a.runs} round(s); evflow durability "
            f"strict; DBOS {'with its system database on the same PostgreSQL' if self.dbos else 'not run'}"
        )
        for label, ours, theirs, ratio, unit in [heads, *rows]:
            print(f"  {label:<{width}}  {ours:<{cols[0]}}  {theirs:<{cols[1]}}  {ratio:<{cols[2]}}  {unit}")
        print("ratios per round, > 1 = evflow better (rates: evflow/DBOS; times: DBOS/evflow)")
        print(
            f"machine: {os.cpu_count()} cores; load average at start {load0}, at end {os.getloadavg()}; "
            f"took {took / 60:.1f} min; logs in {self.log_dir}"
        )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(x: float) -> str:
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if ax >= 0.1 else f"{x:.3f}"


def fig(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(median(values))} [{fmt(min(values))}-{fmt(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "seq", "b", "fanout", "victim"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round; 100 steps, 400 workflows, K = 50")
    parser.add_argument("--only", default="seq,b,fanout,recovery", help="parts: seq, b, fanout, recovery")
    parser.add_argument("--skip-peers", action="store_true", help="evflow only")
    parser.add_argument("--n-seq", type=int, default=500, help="(1) steps in the workflow")
    parser.add_argument("--n-b", default="200,2000", help="(b) workflow counts, one engine")
    parser.add_argument("--n-fan", type=int, default=2000, help="(2) workflows in all")
    parser.add_argument("--procs", default="1,2,4", help="(2) process counts")
    parser.add_argument("--k", type=int, default=200, help="(3) workflows in flight in the victim")
    parser.add_argument("--nap", type=float, default=0.5, help="(3) seconds a resumed nap step sleeps")
    parser.add_argument(
        "--recovery-intervals",
        default="5,1",
        help="(3) evflow worker --recovery-interval values; the first is compared (default 5 = evflow's)",
    )
    # the child processes' own arguments
    parser.add_argument("--url")
    parser.add_argument("--n", type=int)
    parser.add_argument("--engine-id")
    parser.add_argument("--sizes", default="")
    args = parser.parse_args()
    if args.mode == "seq":
        asyncio.run(child_seq(args.url, args.n))
        return
    if args.mode == "b":
        asyncio.run(child_b(args.url, [int(n) for n in args.sizes.split(",")]))
        return
    if args.mode == "fanout":
        asyncio.run(child_fanout(args.url, args.n, args.engine_id))
        return
    if args.mode == "victim":
        asyncio.run(child_victim(args.url, args.k, args.engine_id))
        return
    if args.quick:
        args.runs, args.n_seq, args.n_fan, args.k, args.n_b = 1, 100, 400, 50, "100"
    args.procs = [int(p) for p in str(args.procs).split(",") if p]
    args.n_b = [int(n) for n in str(args.n_b).split(",") if n]
    args.recovery_intervals = [float(x) for x in str(args.recovery_intervals).split(",") if x]
    Driver(args).run()


if __name__ == "__main__":
    main()
