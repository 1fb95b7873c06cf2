"""Property tests of the fold (``evflow.replay`` / ``_projection.apply``).

A small model plays a workflow as the engine would log it: steps start, fail and retry,
finish (with an output or a continuation), fail for good; the workflow finishes, fails,
is canceled, crashes and is resumed. The model knows what the status and the stats must
be after every event (SPEC section 4); the fold must agree, for every prefix of the log.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evflow
from evflow._events import (
    ErrorInfo,
    Event,
    MetadataAttached,
    StepFailed,
    StepFinished,
    StepOptions,
    StepSpec,
    StepStarted,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowFinished,
    WorkflowStarted,
)
from evflow._projection import WorkflowState, allocate_names, apply

WID = "wf-props"
ERROR = ErrorInfo(type="builtins:ValueError", message="boom")
BASES = ["load", "train", "eval"]


class ModelStep:
    def __init__(self, base: str) -> None:
        self.base = base
        self.status = "PENDING"
        self.start: float | None = None
        self.end: float | None = None
        self.attempt = 0
        self.retrying = False  # failed with will_retry=True: the next attempt is due
        self.finished = False
        self.continuation: str | None = None
        self.user_metadata: dict[str, Any] = {}


class Model:
    """The expected state of a workflow, updated by the action that logs each event."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.events: list[Event] = []
        self.snapshots: list[dict[str, Any]] = []
        self.clock = 1_764_150_000.0
        self.status = "RUNNING"
        self.start: float | None = None
        self.end: float | None = None
        self.user_metadata: dict[str, Any] = {}
        self.steps: dict[str, ModelStep] = {}
        self.counters: dict[str, int] = {}
        self.output = ""

    # -- logging ----------------------------------------------------------------------------

    def draw(self, strategy: st.SearchStrategy[Any], label: str) -> Any:
        return self.data.draw(strategy, label=label)

    def log(self, cls: type[Event], **fields: Any) -> float:
        # equal times happen (the engine stamps one batch with one time)
        self.clock += self.draw(st.sampled_from([0.0, 0.25, 1.0]), "dt")
        self.events.append(cls(seq=len(self.events) + 1, time=self.clock, **fields))
        return self.clock

    def snap(self) -> None:
        stats = {"start_time": self.start, "end_time": self.end}
        self.snapshots.append(
            {
                "workflow": {
                    "workflow_id": WID,
                    "status": self.status,
                    "user_metadata": dict(self.user_metadata),
                    "stats": {k: v for k, v in stats.items() if v is not None},
                },
                "steps": {
                    name: {
                        "name": name,
                        "status": s.status,
                        "user_metadata": dict(s.user_metadata),
                        "stats": {
                            k: v
                            for k, v in {"start_time": s.start, "end_time": s.end}.items()
                            if v is not None
                        },
                    }
                    for name, s in self.steps.items()
                },
            }
        )

    def new_specs(self, count: int) -> list[StepSpec]:
        """Specs named as the engine names them: raw base first, then base_1, base_2, ..."""
        specs = []
        for _ in range(count):
            base = self.draw(st.sampled_from(BASES), "base")
            k = self.counters.get(base, 0)
            while (name := base if k == 0 else f"{base}_{k}") in self.steps:
                k += 1
            self.counters[base] = k + 1
            meta = self.draw(st.sampled_from([{}, {"team": "ml"}]), "spec metadata")
            self.steps[name] = ModelStep(base)
            self.steps[name].user_metadata = dict(meta)
            specs.append(
                StepSpec(
                    name=name,
                    func="mod:f",
                    args=b"\x00\x92\x90\x80",
                    options=StepOptions(name=base),
                    user_metadata=meta,
                )
            )
        return specs

    def with_status(self, *statuses: str, retrying: bool | None = None) -> list[str]:
        return [
            n
            for n, s in self.steps.items()
            if s.status in statuses and (retrying is None or s.retrying == retrying)
        ]

    def output_known(self) -> bool:
        step = self.steps[self.output]
        while step.finished:
            if step.continuation is None:
                return True
            step = self.steps[step.continuation]
        return False

    def stop_running(self) -> None:
        for step in self.steps.values():
            if step.status == "RUNNING":
                step.status = "CANCELED"
                step.retrying = False

    # -- actions ----------------------------------------------------------------------------

    def begin(self) -> None:
        specs = self.new_specs(self.draw(st.integers(1, 4), "steps"))
        self.output = specs[0].name
        meta = self.draw(st.sampled_from([{}, {"owner": "ana"}]), "workflow metadata")
        t = self.log(WorkflowStarted, workflow_id=WID, output=self.output, steps=specs, user_metadata=meta)
        self.user_metadata = dict(meta)
        self.start = t
        self.snap()

    def actions(self) -> list[str]:
        """What may happen next; progress is listed several times to make it likelier."""
        if self.status == "RUNNING":
            out = ["attach_to_workflow", "crash_and_resume", "cancel"]
            if self.with_status("PENDING"):
                out += ["start"] * 4
            if self.with_status("RUNNING", retrying=False):
                out += ["finish"] * 4 + ["retry", "fail", "attach_to_step"]
            if self.with_status("RUNNING", retrying=True):
                out += ["next_attempt"] * 2
            if self.output_known():
                out += ["complete"] * 3
            return out
        if self.status == "FAILED":
            return ["resume", "cancel"]
        if self.status == "CANCELED":
            return ["resume"]
        return []

    def act(self, action: str) -> None:
        getattr(self, f"do_{action}")()

    def do_start(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("PENDING")), "start")
        t = self.log(StepStarted, name=name, attempt=1)
        step = self.steps[name]
        step.status, step.start, step.end, step.attempt = "RUNNING", t, None, 1
        self.snap()

    def do_retry(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("RUNNING", retrying=False)), "retry")
        step = self.steps[name]
        self.log(StepFailed, name=name, attempt=step.attempt, will_retry=True, error=ERROR)
        step.retrying = True
        self.snap()

    def do_next_attempt(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("RUNNING", retrying=True)), "next attempt")
        step = self.steps[name]
        step.attempt += 1
        step.retrying = False
        self.log(StepStarted, name=name, attempt=step.attempt)  # start_time stays the first attempt's
        self.snap()

    def do_finish(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("RUNNING", retrying=False)), "finish")
        step = self.steps[name]
        if self.draw(st.booleans(), "continuation") and len(self.steps) < 12:
            specs = self.new_specs(self.draw(st.integers(1, 3), "children"))
            t = self.log(StepFinished, name=name, continuation=specs, continuation_output=specs[0].name)
            step.continuation = specs[0].name
        else:
            t = self.log(StepFinished, name=name, output=b"\x00\x2a")
        step.status, step.end, step.finished = "SUCCESSFUL", t, True
        self.snap()

    def do_fail(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("RUNNING", retrying=False)), "fail")
        step = self.steps[name]
        t = self.log(StepFailed, name=name, attempt=step.attempt, will_retry=False, error=ERROR)
        step.status, step.end = "FAILED", t
        self.snap()
        t = self.log(WorkflowFailed, error=ERROR, step=name)
        self.stop_running()
        self.status, self.end = "FAILED", t
        self.snap()

    def do_complete(self) -> None:
        t = self.log(WorkflowFinished)
        self.stop_running()
        self.status, self.end = "SUCCESSFUL", t
        self.snap()

    def do_cancel(self) -> None:
        self.log(WorkflowCanceled)
        self.stop_running()
        self.status, self.end = "CANCELED", None
        self.snap()

    def do_resume(self) -> None:
        t = self.log(WorkflowStarted, workflow_id=WID, resume=True)
        for step in self.steps.values():
            if step.status != "SUCCESSFUL":
                step.status = "PENDING"  # keeps the stats of its last execution until it starts
                step.retrying = False
        self.status, self.start, self.end = "RUNNING", t, None
        self.snap()

    def do_crash_and_resume(self) -> None:
        # a killed process appends nothing: the next event is the resume's WorkflowStarted
        self.do_resume()

    def do_attach_to_workflow(self) -> None:
        meta = {self.draw(st.sampled_from("xyz"), "key"): self.draw(st.integers(0, 9), "value")}
        self.log(MetadataAttached, metadata=meta)
        self.user_metadata.update(meta)
        self.snap()

    def do_attach_to_step(self) -> None:
        name = self.draw(st.sampled_from(self.with_status("RUNNING", retrying=False)), "attach")
        meta = {self.draw(st.sampled_from("xyz"), "key"): self.draw(st.integers(0, 9), "value")}
        self.log(MetadataAttached, metadata=meta, step=name)
        self.steps[name].user_metadata.update(meta)
        self.snap()


@st.composite
def workflow_logs(draw: st.DrawFn, max_actions: int = 40) -> Model:
    """A model that has played a random workflow, with its log and expected snapshots."""
    model = Model(draw(st.data()))
    model.begin()
    for _ in range(draw(st.integers(0, max_actions))):
        actions = model.actions()
        if not actions:
            break
        model.act(draw(st.sampled_from(actions)))
    return model


def observed(state: WorkflowState) -> dict[str, Any]:
    """What the model predicts, read from the fold (every step's metadata but its options)."""
    steps = {}
    for name in state.steps:
        meta = state.metadata(name)
        steps[name] = {k: meta[k] for k in ("name", "status", "user_metadata", "stats")}
    return {"workflow": state.metadata(), "steps": steps}


def full(state: WorkflowState) -> dict[str, Any]:
    return {"workflow": state.metadata(), "steps": {name: state.metadata(name) for name in state.steps}}


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(workflow_logs())
def test_the_fold_agrees_with_the_model_after_every_event(model: Model) -> None:
    state: WorkflowState | None = None
    for event, expected in zip(model.events, model.snapshots, strict=True):
        state = apply(state, event)
        assert observed(state) == expected, f"after {event!r}"


@settings(max_examples=50, deadline=None)
@given(workflow_logs())
def test_replaying_a_prefix_equals_applying_events_one_by_one(model: Model) -> None:
    state: WorkflowState | None = None
    for k, event in enumerate(model.events, 1):
        state = apply(state, event)
        assert full(evflow.replay(model.events[:k])) == full(state)


@settings(max_examples=50, deadline=None)
@given(workflow_logs())
def test_replay_as_of_equals_replaying_the_prefix(model: Model) -> None:
    for k in range(1, len(model.events) + 1):
        assert full(evflow.replay(model.events, as_of=k)) == full(evflow.replay(model.events[:k]))
    assert full(evflow.replay(model.events, as_of=len(model.events) + 5)) == full(evflow.replay(model.events))


@settings(deadline=None)
@given(workflow_logs())
def test_status_and_time_rules(model: Model) -> None:
    """SPEC section 4, checked on the fold alone (no model)."""
    state: WorkflowState | None = None
    last_start = None
    for event in model.events:
        before = {n: state.metadata(n) for n in state.steps} if state is not None else {}
        state = apply(state, event)
        wf = state.metadata()
        status, stats = wf["status"], wf["stats"]
        if isinstance(event, WorkflowStarted):
            last_start = event.time
            # a resume keeps the stats of steps whose output was recorded earlier
            for name, meta in before.items():
                if meta["status"] == "SUCCESSFUL":
                    assert state.metadata(name) == meta
        assert stats["start_time"] == last_start
        if status in ("RUNNING", "CANCELED"):
            assert "end_time" not in stats
        else:
            assert stats["end_time"] >= stats["start_time"]
        for name, step in state.steps.items():
            meta = state.metadata(name)
            s_status, s_stats = meta["status"], meta["stats"]
            if s_status in ("RUNNING", "CANCELED"):
                assert "end_time" not in s_stats, name
            if s_status == "RUNNING":
                assert status == "RUNNING" and "start_time" in s_stats
            if s_status in ("SUCCESSFUL", "FAILED"):
                assert s_stats["end_time"] >= s_stats["start_time"]
            if step.parent is not None and "start_time" in s_stats:
                # a continuation's children start after their parent ended
                assert s_stats["start_time"] >= state.metadata(step.parent)["stats"]["end_time"]


@settings(max_examples=40)
@given(workflow_logs())
def test_without_a_live_engine_running_reads_resumable(model: Model) -> None:
    live = evflow.replay(model.events)
    dead = evflow.replay(model.events, live=False)
    assert dead.metadata()["status"] == ("RESUMABLE" if live.status == "RUNNING" else live.status.value)
    for name in live.steps:
        expected = live.metadata(name)
        if expected["status"] == "RUNNING":
            expected["status"] = "RESUMABLE"
        assert dead.metadata(name) == expected


@settings(max_examples=40)
@given(workflow_logs())
def test_names_come_from_the_log(model: Model) -> None:
    """The counters folded from the log name the next step as the engine would."""
    state = evflow.replay(model.events)
    for base in BASES:
        k = model.counters.get(base, 0)
        while (name := base if k == 0 else f"{base}_{k}") in model.steps:
            k += 1
        assert allocate_names(state, [base]) == [name]


# -- malformed logs -------------------------------------------------------------------------------


def started(seq: int = 1) -> WorkflowStarted:
    spec = StepSpec(name="a", func="mod:f", args=b"", options=StepOptions(name="a"))
    return WorkflowStarted(seq=seq, time=1.0, workflow_id=WID, output="a", steps=[spec])


@pytest.mark.parametrize(
    ("events", "match"),
    [
        pytest.param([], "no events", id="empty"),
        pytest.param(
            [StepStarted(seq=1, time=1.0, name="a")], "must begin with WorkflowStarted", id="no-start"
        ),
        pytest.param([started(), StepStarted(seq=3, time=2.0, name="a")], "does not follow", id="gap"),
        pytest.param([started(), started(seq=2)], "first event", id="second-first-start"),
    ],
)
def test_malformed_logs_are_refused(events: list[Event], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evflow.replay(events)


def test_unknown_step_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        evflow.replay([started(), StepStarted(seq=2, time=2.0, name="nope")])


def test_as_of_before_the_first_event_is_refused() -> None:
    with pytest.raises(ValueError, match="seq <= 0"):
        evflow.replay([started()], as_of=0)


def test_metadata_dicts_are_copies() -> None:
    spec = StepSpec(
        name="a", func="mod:f", args=b"", options=StepOptions(name="a"), user_metadata={"n": {"k": 1}}
    )
    state = evflow.replay(
        [
            WorkflowStarted(
                seq=1, time=1.0, workflow_id=WID, output="a", steps=[spec], user_metadata={"n": {"k": 1}}
            )
        ]
    )
    before = copy.deepcopy(full(state))
    full(state)["workflow"]["user_metadata"]["n"]["k"] = 2
    full(state)["steps"]["a"]["user_metadata"]["n"]["k"] = 2
    assert full(state) == before
