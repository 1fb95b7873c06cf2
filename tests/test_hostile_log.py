"""A log is data, never code: what a crafted log can make an engine do (SPEC section 2;
docs/storage.md, "Untrusted logs").

Each test builds a log the way a user would get one (``evflow import`` of a JSON-lines
export, or events appended to a store) that names something other than a step: a
function such as ``os:system``, a module nobody imported, an exception type or an actor
class of such a module. Nothing it names may run, and with ``allow_pickle=False`` nothing
it names may be imported.
"""

from __future__ import annotations

import pathlib
import pickle
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import evflow
from evflow._codec import Ref, encode_value
from evflow._events import (
    ActorCallSubmitted,
    AnyEvent,
    ErrorInfo,
    Event,
    StepFailed,
    StepFinished,
    StepOptions,
    StepSpec,
    StepStarted,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from evflow.stores import MemoryStore

pytestmark = pytest.mark.anyio

PICKLE = [pytest.param(True, id="pickle"), pytest.param(False, id="no-pickle")]

#: What the steps of this module did (a step that ran, a function that was called).
ran: list[str] = []


@pytest.fixture(autouse=True)
def _clear_ran() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


@evflow.step
def first() -> str:
    ran.append("first")
    return "true"


def not_a_step(*args: Any) -> None:
    ran.append("not_a_step")


class NotAStep:
    def __init__(self, *args: Any) -> None:
        ran.append("NotAStep")


class Refused(Exception):
    """An exception class this module defines (so it is imported)."""


class Touch:
    """Unpickling this creates a file: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.path,))


@dataclass
class Planted:
    """A module on ``sys.path`` that nobody imported; importing it creates ``marker``."""

    name: str
    marker: Path

    def imported(self) -> bool:
        return self.name in sys.modules or self.marker.exists()


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Planted]:
    name = f"evflow_planted_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    source = f"""
        import pathlib

        import evflow

        pathlib.Path({str(marker)!r}).touch()


        @evflow.step
        def greet() -> str:
            return "hello"


        class Boom(Exception):
            pass


        @evflow.virtual_actor
        class Counter:
            def __init__(self) -> None:
                self.n = 0

            def incr(self) -> int:
                self.n += 1
                return self.n
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield Planted(name, marker)
    sys.modules.pop(name, None)


# -- crafting logs ---------------------------------------------------------------------------------


def _spec(name: str, func: str, args: list[Any] | None = None, deps: list[str] | None = None) -> StepSpec:
    return StepSpec(
        name=name,
        func=func,
        args=encode_value((args or [], {})),
        options=StepOptions(name=name, max_retries=0),
        deps=deps or [],
    )


def _started(workflow_id: str, specs: list[StepSpec]) -> WorkflowStarted:
    """The first event of a workflow whose output is the first spec (RESUMABLE: no owner)."""
    return WorkflowStarted(
        seq=1, time=time.time(), workflow_id=workflow_id, output=specs[0].name, steps=specs
    )


def _store(workflow_id: str, events: list[Event]) -> MemoryStore:
    store = MemoryStore()
    store.append_nowait(workflow_id, events)
    return store


def _failed(workflow_id: str, error: ErrorInfo) -> list[Event]:
    """A workflow whose one step ``boom`` failed with ``error``."""
    return [
        _started(workflow_id, [_spec("boom", f"{__name__}:first")]),
        StepStarted(seq=2, time=time.time(), name="boom"),
        StepFailed(seq=3, time=time.time(), name="boom", attempt=1, will_retry=False, error=error),
        WorkflowFailed(seq=4, time=time.time(), error=error, step="boom"),
    ]


async def evflow_import(storage: Path, events: list[AnyEvent], dump: Path) -> None:
    """``evflow --storage STORAGE import DUMP`` of ``events`` written as an export."""
    await anyio.Path(dump).write_bytes(b"".join(msgspec.json.encode(event) + b"\n" for event in events))
    result = await anyio.run_process(
        [sys.executable, "-m", "evflow", "--storage", str(storage), "import", str(dump)], check=False
    )
    assert result.returncode == 0, result.stderr.decode()


# -- step functions --------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_an_imported_log_naming_os_system_runs_nothing(tmp_path: Path, allow_pickle: bool) -> None:
    pwned = tmp_path / "pwned"
    storage = tmp_path / "store"
    log: list[AnyEvent] = [_started("hostile", [_spec("run", "os:system", [f"touch {pwned}"])])]
    await evflow_import(storage, log, tmp_path / "hostile.jsonl")
    async with evflow.Engine(storage, allow_pickle=allow_pickle):
        assert await evflow.get_status("hostile") == "RESUMABLE"
        with pytest.raises(evflow.WorkflowExecutionError, match="'os:system'") as caught:
            await evflow.resume("hostile")
        assert isinstance(caught.value.__cause__, ImportError)
        assert "not a function decorated with @evflow.step" in str(caught.value) or not allow_pickle
        assert await evflow.get_status("hostile") == "FAILED"
        assert (await evflow.get_metadata("hostile", "run"))["status"] == "FAILED"
    assert not pwned.exists()


async def test_evflow_resume_of_an_imported_log_naming_os_system_runs_nothing(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    storage = tmp_path / "store"
    log: list[AnyEvent] = [_started("hostile", [_spec("run", "os:system", [f"touch {pwned}"])])]
    await evflow_import(storage, log, tmp_path / "hostile.jsonl")
    result = await anyio.run_process(
        [sys.executable, "-m", "evflow", "--storage", str(storage), "resume", "hostile"], check=False
    )
    assert result.returncode == 1
    assert "hostile  FAILED" in result.stdout.decode()
    assert "'os:system'" in result.stdout.decode() + result.stderr.decode()
    assert not pwned.exists()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("os:system", id="os.system"),
        pytest.param(f"{__name__}:not_a_step", id="plain-function"),
        pytest.param(f"{__name__}:NotAStep", id="class"),
        pytest.param("builtins:print", id="builtin"),
    ],
)
@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_a_path_that_is_not_a_step_is_refused_before_any_step_runs(
    path: str, allow_pickle: bool
) -> None:
    # The refused step depends on a real one: that one must not run either.
    specs = [_spec("hostile", path, [Ref("first")], deps=["first"]), _spec("first", f"{__name__}:first")]
    store = _store("wf", [_started("wf", specs)])
    async with evflow.Engine(store, allow_pickle=allow_pickle):
        with pytest.raises(evflow.WorkflowExecutionError, match=re.escape(repr(path))):
            await evflow.resume("wf")
        assert ran == []
        assert (await evflow.get_metadata("wf", "first"))["status"] == "PENDING"
        assert (await evflow.get_metadata("wf", "hostile"))["status"] == "FAILED"


@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_a_recorded_continuation_naming_os_system_is_refused(
    tmp_path: Path, allow_pickle: bool
) -> None:
    pwned = tmp_path / "pwned"
    parent = _spec("parent", f"{__name__}:first")
    child = _spec("child", "os:system", [f"touch {pwned}"])
    store = _store(
        "wf",
        [
            _started("wf", [parent]),
            StepStarted(seq=2, time=time.time(), name="parent"),
            StepFinished(
                seq=3, time=time.time(), name="parent", continuation=[child], continuation_output="child"
            ),
        ],
    )
    async with evflow.Engine(store, allow_pickle=allow_pickle):
        with pytest.raises(evflow.WorkflowExecutionError, match="'os:system'"):
            await evflow.resume("wf")
    assert not pwned.exists()


async def test_without_pickle_a_module_a_log_names_is_never_imported(
    tmp_path: Path, planted: Planted
) -> None:
    path = f"{planted.name}:greet"
    storage = tmp_path / "store"
    await evflow_import(storage, [_started("wf", [_spec("greet", path)])], tmp_path / "wf.jsonl")
    async with evflow.Engine(storage, allow_pickle=False):
        with pytest.raises(evflow.WorkflowExecutionError, match=re.escape(repr(path))) as caught:
            await evflow.resume("wf")
        assert "allow_pickle=False" in str(caught.value.__cause__)
        assert await evflow.get_status("wf") == "FAILED"
    assert not planted.imported()


async def test_with_pickle_a_module_a_log_names_is_imported_so_its_step_resumes(planted: Planted) -> None:
    # The other side of the trade-off: a trusted log resumes in a process that did not
    # import the step's module yet.
    store = _store("wf", [_started("wf", [_spec("greet", f"{planted.name}:greet")])])
    async with evflow.Engine(store, allow_pickle=True):
        assert await evflow.resume("wf") == "hello"
    assert planted.imported()


async def test_without_pickle_an_imported_step_resumes() -> None:
    store = _store("wf", [_started("wf", [_spec("first", f"{__name__}:first")])])
    async with evflow.Engine(store, allow_pickle=False):
        assert await evflow.resume("wf") == "true"
    assert ran == ["first"]


# -- exception types -------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_a_recorded_error_type_that_is_a_plain_class_is_not_called(allow_pickle: bool) -> None:
    error = ErrorInfo(type=f"{__name__}:NotAStep", message="boom", args=encode_value(("boom",)))
    async with evflow.Engine(_store("wf", _failed("wf", error)), allow_pickle=allow_pickle):
        with pytest.raises(evflow.WorkflowExecutionError) as caught:
            await evflow.get_output("wf")
    assert isinstance(caught.value.__cause__, evflow.StepError)
    assert ran == []


async def test_without_pickle_an_error_type_of_an_unimported_module_is_not_imported(planted: Planted) -> None:
    error = ErrorInfo(type=f"{planted.name}:Boom", message="boom", args=encode_value(("boom",)))
    async with evflow.Engine(_store("wf", _failed("wf", error)), allow_pickle=False):
        for name in (None, "boom"):
            with pytest.raises(evflow.WorkflowExecutionError, match="Boom: boom") as caught:
                await evflow.get_output("wf", name=name)
            cause = caught.value.__cause__
            assert isinstance(cause, evflow.StepError)
            assert (cause.type_name, cause.message) == (f"{planted.name}:Boom", "boom")
    assert not planted.imported()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("builtins:KeyError", KeyError, id="builtin"),
        pytest.param(f"{__name__}:Refused", Refused, id="imported-class"),
    ],
)
async def test_without_pickle_error_types_are_rebuilt_from_builtins_and_imported_classes(
    path: str, expected: type[Exception]
) -> None:
    error = ErrorInfo(type=path, message="boom", args=encode_value(("boom",)))
    async with evflow.Engine(_store("wf", _failed("wf", error)), allow_pickle=False):
        with pytest.raises(evflow.WorkflowExecutionError) as caught:
            await evflow.get_output("wf")
    assert type(caught.value.__cause__) is expected
    assert caught.value.__cause__.args == ("boom",)


async def test_without_pickle_pickled_error_args_are_not_unpickled(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    payload = pickle.dumps(Touch(pwned))
    error = ErrorInfo(type="builtins:ValueError", message="boom", args=b"\x01" + payload, pickled=payload)
    async with evflow.Engine(_store("wf", _failed("wf", error)), allow_pickle=False):
        with pytest.raises(evflow.WorkflowExecutionError) as caught:
            await evflow.get_output("wf")
    assert isinstance(caught.value.__cause__, evflow.StepError)
    assert not pwned.exists()


@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_exceptions_inside_values_never_import(planted: Planted, allow_pickle: bool) -> None:
    # An exception inside a value (the (None, exc) of catch_exceptions) of a class whose
    # module this process never imported: rebuilt as StepError, on either setting.
    boom = type("Boom", (Exception,), {"__module__": planted.name})
    output = encode_value((None, boom("boom")))
    store = _store(
        "wf",
        [
            _started("wf", [_spec("out", f"{__name__}:first")]),
            StepStarted(seq=2, time=time.time(), name="out"),
            StepFinished(seq=3, time=time.time(), name="out", output=output),
            WorkflowFinished(seq=4, time=time.time()),
        ],
    )
    async with evflow.Engine(store, allow_pickle=allow_pickle):
        value, error = await evflow.get_output("wf")
    assert value is None
    assert isinstance(error, evflow.StepError)
    assert (error.type_name, error.message) == (f"{planted.name}:Boom", "boom")
    assert not planted.imported()


# -- actor classes ---------------------------------------------------------------------------------


def _actor_log(actor_id: str, cls: str) -> list[Event]:
    """An actor of class ``cls`` with one submitted call of its ``incr`` (RESUMABLE)."""
    call = StepSpec(
        name="incr",
        func=f"{cls}.incr",
        args=encode_value(([], {})),
        options=StepOptions(name="incr", step_type="ACTOR_METHOD", max_retries=0),
    )
    return [
        WorkflowStarted(
            seq=1,
            time=time.time(),
            workflow_id=actor_id,
            kind="actor",
            actor_class=cls,
            actor_state=encode_value({"n": 0}),
        ),
        ActorCallSubmitted(seq=2, time=time.time(), step=call),
    ]


async def test_without_pickle_an_actor_class_of_an_unimported_module_is_not_imported(
    planted: Planted,
) -> None:
    path = f"{planted.name}:Counter"
    async with evflow.Engine(_store("counter", _actor_log("counter", path)), allow_pickle=False):
        with pytest.raises(ImportError, match=re.escape(repr(path))):
            await evflow.get_actor("counter")
        with pytest.raises(evflow.WorkflowExecutionError, match=re.escape(repr(path))):
            await evflow.resume("counter")
    assert not planted.imported()


@pytest.mark.parametrize(
    "path",
    [pytest.param("os:system", id="os.system"), pytest.param(f"{__name__}:NotAStep", id="plain-class")],
)
@pytest.mark.parametrize("allow_pickle", PICKLE)
async def test_an_actor_class_path_that_is_not_an_actor_is_refused(path: str, allow_pickle: bool) -> None:
    async with evflow.Engine(_store("counter", _actor_log("counter", path)), allow_pickle=allow_pickle):
        with pytest.raises(ImportError, match=re.escape(repr(path))):
            await evflow.get_actor("counter")
        with pytest.raises(evflow.WorkflowExecutionError, match=re.escape(repr(path))):
            await evflow.resume("counter")
    assert ran == []
