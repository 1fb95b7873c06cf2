"""Messages (SPEC section 8): ``evflow.send`` and ``evflow.wait_for_event(topic)``, and
Ray-style listener classes.

Every assertion is on the recorded log and the values, never on elapsed wall time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._codec import encode_event, encode_value
from evflow._errors import UnencodableError
from evflow._events import AnyEvent, MessageReceived, StepFinished, StepStarted
from evflow.stores import FileStore, Store
from evflow.waiting._listeners import resolve_listener
from pg_schema import DSN, postgres_stores

pytestmark = pytest.mark.anyio

TESTS_DIR = Path(__file__).parent

#: Gates that steps wait on, by name (set by the tests).
GATES: dict[str, anyio.Event] = {}


@evflow.step(name="both")
def both(a: Any, b: Any) -> list[Any]:
    return [a, b]


@evflow.step(name="gate")
async def gate(name: str) -> str:
    await GATES[name].wait()
    return name


@evflow.step(name="then_wait")
async def then_wait(name: str, topic: str, first: Any = None) -> evflow.Node:
    """Waits for gate ``name``, then continues as a wait on ``topic`` (so the wait starts
    only after what the test did meanwhile)."""
    await GATES[name].wait()
    return both.step(first, evflow.wait_for_event(topic, name="late"))


@evflow.step(name="twice")
def twice(first: Any, topic: str) -> evflow.Node:
    return both.step(first, evflow.wait_for_event(topic))


StoreFactory = Callable[[], "str | Store"]

SETUPS = [
    pytest.param(("asyncio", "memory"), id="asyncio-memory"),
    pytest.param(("trio", "memory"), id="trio-memory"),
    pytest.param(("asyncio", "file"), id="asyncio-file"),
    pytest.param(("trio", "file"), id="trio-file"),
    pytest.param(("asyncio", "postgres"), id="asyncio-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SETUPS)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)


@pytest.fixture
def anyio_backend(setup: tuple[str, str]) -> str:
    return setup[0]


@pytest.fixture
async def store(setup: tuple[str, str], tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of storage for engines on one store (opened one after the other, or at
    once on PostgreSQL)."""
    kind = setup[1]
    if kind == "memory":
        shared = evflow.stores.MemoryStore()
        yield lambda: shared
    elif kind == "file":
        yield lambda: str(tmp_path / "store")
    else:
        async for factory in postgres_stores("asyncio"):  # paired with asyncio in the params
            yield factory


async def until(condition: Callable[[], Any]) -> None:
    with anyio.fail_after(30):
        while not await condition():
            await anyio.sleep(0.01)


async def step_running(engine: evflow.Engine, wid: str, name: str) -> None:
    async def running() -> bool:
        try:
            return bool((await engine.get_metadata(wid, name))["status"] == "RUNNING")
        except evflow.StepNotFoundError:
            return False

    await until(running)


def messages(events: list[AnyEvent]) -> list[MessageReceived]:
    return [e for e in events if isinstance(e, MessageReceived)]


def consumed(events: list[AnyEvent]) -> dict[str, int | None]:
    return {e.name: e.consumed for e in events if isinstance(e, StepFinished)}


class TestMessages:
    """On every store: memory and file (asyncio and trio), PostgreSQL."""

    async def test_the_oldest_message_of_its_topic_first_other_topics_untouched(
        self, store: StoreFactory
    ) -> None:
        GATES["oldest"] = anyio.Event()
        async with evflow.Engine(store()) as engine:
            handle = await twice.step(then_wait.step("oldest", "a"), "a").run_async("wf")
            for topic, payload in (("a", 1), ("b", "other"), ("a", 2), ("a", 3)):
                await engine.send("wf", topic, payload)  # before any wait starts: they wait
            GATES["oldest"].set()
            assert await handle.result() == [[None, 1], 2]
            log = await engine.store.read("wf")
            assert [m.topic for m in messages(log)] == ["a", "b", "a", "a"]
            state = evflow.replay(log)
            assert {t: [m.seq for m in ms.values()] for t, ms in state.inbox.items()} == {
                "b": [messages(log)[1].seq],
                "a": [messages(log)[3].seq],
            }
            late = await engine.get_metadata("wf", "late")
            assert late["step_options"]["step_type"] == "EVENT"
            assert late["stats"]["seq"] == messages(log)[0].seq
            assert (await engine.get_metadata("wf", "wait_for_event"))["stats"]["seq"] == messages(log)[2].seq

    async def test_a_send_wakes_a_waiting_node(self, store: StoreFactory) -> None:
        async with evflow.Engine(store()) as engine:
            handle = await evflow.wait_for_event("approval").run_async("wf")
            await step_running(engine, "wf", "wait_for_event")
            await evflow.send("wf", "approval", {"ok": True})
            assert await handle.result() == {"ok": True}
            assert await engine.get_status("wf") == "SUCCESSFUL"

    async def test_a_timeout_gives_none_and_a_later_message_stays_for_the_next_wait(
        self, store: StoreFactory
    ) -> None:
        GATES["timeout"] = anyio.Event()
        async with evflow.Engine(store()) as engine:
            first = evflow.wait_for_event("t", timeout=0.05, name="early")
            handle = await then_wait.step("timeout", "t", first).run_async("wf")

            async def early_ended() -> bool:
                return "end_time" in (await engine.get_metadata("wf", "early"))["stats"]

            await until(early_ended)
            await engine.send("wf", "t", "later")
            GATES["timeout"].set()
            assert await handle.result() == [None, "later"]
            early = await engine.get_metadata("wf", "early")
            assert "seq" not in early["stats"] and early["stats"]["end_time"] >= early["stats"]["wake_time"]
            log = await engine.store.read("wf")
            assert consumed(log)["early"] is None and consumed(log)["late"] == messages(log)[0].seq

    async def test_the_same_idempotency_key_is_recorded_once(self, store: StoreFactory) -> None:
        GATES["key"] = anyio.Event()
        async with evflow.Engine(store()) as engine:
            handle = await then_wait.step("key", "pay").run_async("wf")
            await engine.send("wf", "pay", 1, idempotency_key="order-7")
            before = await engine.store.read("wf")
            await engine.send("wf", "pay", 2, idempotency_key="order-7")
            assert await engine.store.read("wf") == before
            await engine.send("wf", "pay", 3, idempotency_key="order-8")
            GATES["key"].set()
            assert await handle.result() == [None, 1]
            assert [m.idempotency_key for m in messages(await engine.store.read("wf"))] == [
                "order-7",
                "order-8",
            ]
            # a retry once the workflow ended is still a retry: nothing is written, no error
            await engine.send("wf", "pay", 4, idempotency_key="order-8")
            assert len(messages(await engine.store.read("wf"))) == 2
            with pytest.raises(evflow.WorkflowNotRunningError):
                await engine.send("wf", "pay", 4, idempotency_key="order-9")

    async def test_a_resumable_workflow_takes_messages_and_its_resume_consumes_them(
        self, store: StoreFactory
    ) -> None:
        async with evflow.Engine(store()) as engine:
            await evflow.wait_for_event("go").run_async("wf")
            await step_running(engine, "wf", "wait_for_event")
        async with evflow.Engine(store()) as engine:
            assert await engine.get_status("wf") == "RESUMABLE"
            await engine.send("wf", "go", "now", idempotency_key="k")
            await engine.send("wf", "go", "again", idempotency_key="k")
            assert await engine.get_status("wf") == "RESUMABLE"
            assert await engine.resume("wf") == "now"
            log = await engine.store.read("wf")
            assert [m.payload for m in messages(log)] == [messages(log)[0].payload]
            assert consumed(log)["wait_for_event"] == messages(log)[0].seq

    async def test_unknown_and_finished_workflows_refuse(self, store: StoreFactory) -> None:
        GATES["cancel"] = anyio.Event()
        async with evflow.Engine(store()) as engine:
            with pytest.raises(evflow.WorkflowNotFoundError):
                await engine.send("nobody", "t", 1)
            await both.step(1, 2).run("done")
            with pytest.raises(evflow.WorkflowNotRunningError, match="SUCCESSFUL"):
                await engine.send("done", "t", 1)
            handle = await gate.step("cancel").run_async("canceled")
            await handle.cancel()
            with pytest.raises(evflow.WorkflowNotRunningError, match="CANCELED"):
                await engine.send("canceled", "t", 1)
            assert messages(await engine.store.read("done")) == []

    async def test_bad_topics_keys_and_payloads_write_nothing(self, store: StoreFactory) -> None:
        GATES["bad"] = anyio.Event()
        async with evflow.Engine(store(), allow_pickle=False) as engine:
            await gate.step("bad").run_async("wf")
            with anyio.fail_after(30):  # the step has started, and its start is written
                while (await engine.get_metadata("wf", "gate"))["status"] != "RUNNING":
                    await anyio.sleep(0.01)
            await engine.store.flush("wf")
            before = await engine.store.read("wf")
            bad: list[tuple[Any, Any, Any, type[Exception]]] = [
                ("", 1, None, ValueError),
                (5, 1, None, TypeError),
                ("lone \ud800 surrogate", 1, None, ValueError),
                ("x" * 257, 1, None, ValueError),
                ("t", object(), None, UnencodableError),
                ("t", 1, "", ValueError),
                ("t", 1, 7, TypeError),
            ]
            for topic, payload, key, error in bad:
                with pytest.raises(error):
                    await engine.send("wf", topic, payload, idempotency_key=key)
            assert await engine.store.read("wf") == before
            GATES["bad"].set()
            await engine.get_output("wf")

    async def test_replay_as_of_shows_a_message_unconsumed_before_the_step_ended(
        self, store: StoreFactory
    ) -> None:
        async with evflow.Engine(store()) as engine:
            handle = await evflow.wait_for_event("m").run_async("wf")
            await engine.send("wf", "m", "hello")
            await handle.result()
            log = await engine.store.read("wf")
        message = messages(log)[0]
        finished = next(e for e in log if isinstance(e, StepFinished))
        before = evflow.replay(log, as_of=finished.seq - 1)
        assert [m.seq for m in before.inbox["m"].values()] == [message.seq]
        assert "seq" not in before.metadata("wait_for_event")["stats"]
        after = evflow.replay(log, as_of=finished.seq)
        assert after.inbox == {} and after.metadata("wait_for_event")["stats"]["seq"] == message.seq


async def test_two_waits_at_once_on_one_topic_take_two_messages(anyio_backend: str) -> None:
    async with evflow.Engine("memory://") as engine:
        node = both.step(evflow.wait_for_event("m"), evflow.wait_for_event("m"))
        handle = await node.run_async("wf")
        await step_running(engine, "wf", "wait_for_event_1")
        await step_running(engine, "wf", "wait_for_event")
        await engine.send("wf", "m", 1)
        await engine.send("wf", "m", 2)
        assert sorted(await handle.result()) == [1, 2]
        log = await engine.store.read("wf")
        assert sorted(c for c in consumed(log).values() if c is not None) == [m.seq for m in messages(log)]


def test_bad_wait_for_event_arguments_fail_when_built() -> None:
    with pytest.raises(TypeError, match="EventListener"):
        evflow.wait_for_event(object)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        evflow.wait_for_event("")
    with pytest.raises(TypeError):
        evflow.wait_for_event("t", "extra")
    with pytest.raises(ValueError):
        evflow.wait_for_event("t", timeout=-1)


# -- listeners ---------------------------------------------------------------------------------

POLLS: list[Any] = []
CHECKPOINTED: list[tuple[Any, list[str]]] = []
_listener_store: dict[str, Any] = {}


class Ticket(evflow.EventListener):
    """Polls once per call; the event is the argument, tagged."""

    async def poll_for_event(self, ticket: str, *, tag: str = "t") -> Any:
        POLLS.append(ticket)
        return {"ticket": ticket, "tag": tag}


class AckedTicket(Ticket):
    async def event_checkpointed(self, event: Any) -> None:
        engine: evflow.Engine = _listener_store["engine"]
        log = await engine.store.read(_listener_store["wid"])
        CHECKPOINTED.append((event, [e.name for e in log if isinstance(e, StepFinished)]))
        gate_name = _listener_store.get("hold")
        if gate_name is not None:
            await GATES[gate_name].wait()


async def test_a_listener_event_is_the_checkpointed_value(anyio_backend: str) -> None:
    POLLS.clear()
    async with evflow.Engine("memory://") as engine:
        node = evflow.wait_for_event(Ticket, "T-1", tag="x", name="ticket")
        assert await node.run("wf") == {"ticket": "T-1", "tag": "x"}
        meta = await engine.get_metadata("wf", "ticket")
        assert meta["step_options"]["step_type"] == "EVENT"
        log = await engine.store.read("wf")
        finished = next(e for e in log if isinstance(e, StepFinished) and e.name == "ticket")
        assert finished.output is not None
    assert POLLS == ["T-1"]


async def test_event_checkpointed_runs_after_the_event_is_durable_and_resume_never_polls_again(
    anyio_backend: str, tmp_path: Path
) -> None:
    POLLS.clear()
    CHECKPOINTED.clear()
    GATES["ack"] = anyio.Event()
    _listener_store.update(wid="wf", hold="ack")
    async with evflow.Engine(tmp_path) as engine:
        _listener_store["engine"] = engine
        await evflow.wait_for_event(AckedTicket, "T-2", name="ticket").run_async("wf")
        await until(lambda: _ready(CHECKPOINTED))
        # the hook saw the listener step's StepFinished in the store: the event was durable
        event, finished = CHECKPOINTED[0]
        assert event == {"ticket": "T-2", "tag": "t"} and "ticket" in finished
    # closed while the hook held: RESUMABLE; a resume calls the hook again, never polls
    _listener_store.pop("hold")
    async with evflow.Engine(tmp_path) as engine:
        _listener_store["engine"] = engine
        assert await engine.get_status("wf") == "RESUMABLE"
        assert await engine.resume("wf") == {"ticket": "T-2", "tag": "t"}
    assert POLLS == ["T-2"]
    assert len(CHECKPOINTED) == 2


async def _ready(items: list[Any]) -> bool:
    return bool(items)


def test_a_log_can_only_name_listener_classes() -> None:
    with pytest.raises(ImportError, match=r"not a subclass of evflow\.EventListener"):
        resolve_listener("os:system", allow_import=True)
    with pytest.raises(ImportError, match="allow_pickle=False imports"):
        resolve_listener("some_module:Listener", allow_import=False)
    assert resolve_listener(f"{__name__}:Ticket", allow_import=False) is Ticket


# -- PostgreSQL: another live engine runs the workflow ----------------------------------------


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    asyncpg = pytest.importorskip("asyncpg")
    try:
        conn = await asyncpg.connect(DSN, timeout=5)
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {DSN}: {exc}")
    schema = f"evflow_test_{os.urandom(6).hex()}"
    try:
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_message_to_a_workflow_another_engine_runs_goes_through_the_mailbox(
    anyio_backend: str, pg_schema: str
) -> None:
    async with (
        evflow.Engine(evflow.stores.PostgresStore(DSN, schema=pg_schema)) as owner,
        evflow.Engine(evflow.stores.PostgresStore(DSN, schema=pg_schema)) as sender,
    ):
        handle = await owner.run_async(evflow.wait_for_event("approval"), "wf")
        await step_running(owner, "wf", "wait_for_event")
        assert await sender.get_status("wf") == "RUNNING"
        await sender.send("wf", "approval", {"ok": 1}, idempotency_key="a-1")
        # recorded in the log (by the owner) before send returned
        log = await sender.store.read("wf")
        [message] = messages(log)
        assert message.mailbox_id is not None and message.idempotency_key == "a-1"
        assert await handle.result() == {"ok": 1}
        # the owner deletes the mail once the log holds it: maybe just after the run ended
        with anyio.fail_after(30):
            while await sender.store.read_mailbox(["wf"]):
                await anyio.sleep(0.01)
        assert consumed(await owner.store.read("wf"))["wait_for_event"] == message.seq


@pytest.mark.postgres
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mail_left_by_an_owner_that_went_away_is_moved_by_the_resume(
    anyio_backend: str, pg_schema: str
) -> None:
    async with evflow.Engine(evflow.stores.PostgresStore(DSN, schema=pg_schema)) as first:
        await first.run_async(evflow.wait_for_event("go"), "wf")
        await step_running(first, "wf", "wait_for_event")
        # posted as a sender does, but the owner closes before moving it
        raw = MessageReceived(seq=0, time=time.time(), topic="go", payload=encode_value("late"))
        mailbox_id = await first.store.post_message("wf", encode_event(raw))
    async with evflow.Engine(evflow.stores.PostgresStore(DSN, schema=pg_schema)) as second:
        assert [row[0] for row in await second.store.read_mailbox(["wf"])] == [mailbox_id]
        assert await second.resume("wf") == "late"
        [message] = messages(await second.store.read("wf"))
        assert message.mailbox_id == mailbox_id
        assert await second.store.read_mailbox(["wf"]) == []


@pytest.mark.postgres
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_postgres_mailbox(anyio_backend: str, pg_schema: str) -> None:
    store = evflow.stores.PostgresStore(DSN, schema=pg_schema)
    await store.open()
    try:
        seen = await store.wait_for_mail(-1, 5.0)  # listening now
        first = await store.post_message("a", b"one")
        second = await store.post_message("b", b"two")
        third = await store.post_message("a", b"three")
        assert first < second < third
        with anyio.fail_after(30):
            while (await store.wait_for_mail(seen, 5.0)) <= seen:
                pass
        assert await store.read_mailbox(["a"]) == [(first, "a", b"one"), (third, "a", b"three")]
        assert await store.read_mailbox(["a", "b", "c"]) == [
            (first, "a", b"one"),
            (second, "b", b"two"),
            (third, "a", b"three"),
        ]
        await store.delete_from_mailbox([first, 999_999])
        assert [row[0] for row in await store.read_mailbox(["a", "b"])] == [second, third]
    finally:
        await store.close()


async def test_stores_that_are_not_shared_have_no_mailbox(anyio_backend: str) -> None:
    store = evflow.stores.MemoryStore()
    assert await store.read_mailbox(["a"]) == []
    await store.delete_from_mailbox([1])
    with pytest.raises(NotImplementedError):
        await store.post_message("a", b"x")


# -- a real crash ------------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, message_workflows; message_workflows.main(sys.argv[1:])", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read(store: Path, wid: str) -> list[AnyEvent]:
    async def read() -> list[AnyEvent]:
        async with FileStore(store, read_only=True) as reader:
            return await reader.read(wid)

    return anyio.run(read)


@pytest.mark.slow
def test_a_process_killed_between_a_message_and_its_consumption(tmp_path: Path) -> None:
    store, wid = tmp_path / "store", "approver"
    proc = _child("run", str(store), wid)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "sent", proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    log = _read(store, wid)
    [message] = messages(log)
    assert evflow.replay(log, live=False).inbox["approval"] == {message.seq: message}
    assert not any(isinstance(e, StepStarted) and e.name == "approval" for e in log)

    resumed = _child("resume", str(store), wid)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"output": ["held", {"ok": True}]}
    log = _read(store, wid)
    assert messages(log) == [message]  # not lost, not duplicated
    assert [e.consumed for e in log if isinstance(e, StepFinished) and e.name == "approval"] == [message.seq]
    state = evflow.replay(log, live=False)
    assert state.inbox == {} and state.status == "SUCCESSFUL"


# -- the CLI -----------------------------------------------------------------------------------


def _cli(store: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "evflow", "--storage", str(store), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_show_and_events_print_messages(tmp_path: Path) -> None:
    async def write() -> None:
        async with evflow.Engine(tmp_path) as engine:
            handle = await evflow.wait_for_event("pay", name="payment").run_async("wf")
            await engine.send("wf", "spare", "left over")
            await engine.send("wf", "pay", {"amount": 5}, idempotency_key="o-1")
            await handle.result()

    anyio.run(write)
    shown = _cli(tmp_path, "show", "wf")
    assert "messages" in shown and "spare (1)" in shown
    seq = json.loads(_cli(tmp_path, "--json", "show", "wf", "--step", "payment"))["stats"]["seq"]
    step = _cli(tmp_path, "show", "wf", "--step", "payment")
    assert "EVENT" in step and f"seq {seq}" in step
    events = _cli(tmp_path, "events", "wf")
    assert "MessageReceived" in events and "pay: {'amount': 5} key=o-1" in events
    assert f"consumed message seq {seq}" in events
    lines = [json.loads(line) for line in _cli(tmp_path, "--json", "events", "wf").splitlines()]
    assert [line["topic"] for line in lines if line["type"] == "MessageReceived"] == ["spare", "pay"]
    assert [line["seq"] for line in lines if line["type"] == "MessageReceived"][1] == seq
