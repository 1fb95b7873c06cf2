"""User metadata through the public paths keeps every JSON value (SPEC section 4).

The fold's property tests build events directly, past ``validate_metadata``; here arbitrary
JSON (None, nested lists and dicts, empty-string keys, unicode, big and small numbers)
goes in through ``run(metadata=)``, ``@evflow.step(metadata=)``, ``.options(metadata=)``
and ``evflow.attach_metadata``, and ``get_metadata`` must give it back, as written, from
the running engine, from an engine that reopens the file store, and from the log alone.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evflow

# JSON as the json module reads it back, within what the log holds (64-bit ints, text
# without lone surrogates: see the refusals below), and finite floats.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_keys = st.text(max_size=6)  # "" included
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
metadata = st.dictionaries(_keys, json_values, max_size=5)


def exactly(value: Any) -> str:
    """The value as JSON text, so that 1, 1.0 and True (equal in Python) differ."""
    return json.dumps(value, sort_keys=True)


def merged(*dicts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        out = {**out, **d}
    return out


async def _round_trip(
    store: Path,
    run_md: dict[str, Any] | None,
    decorator_md: dict[str, Any],
    options_md: dict[str, Any],
    attached: list[dict[str, Any]],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workflow, step) user_metadata from each of the three readers."""

    @evflow.step(name="tagged", metadata=decorator_md)
    def tagged(to_attach: list[dict[str, Any]]) -> int:
        for item in to_attach:
            evflow.attach_metadata(item)
        return len(to_attach)

    seen = []
    async with evflow.Engine(store) as engine:
        node = tagged.options(metadata=options_md).step(attached)
        assert await node.run("wf", metadata=run_md) == len(attached)
        seen.append(
            (
                (await engine.get_metadata("wf"))["user_metadata"],
                (await engine.get_metadata("wf", "tagged"))["user_metadata"],
            )
        )
    async with evflow.Engine(store) as engine:
        seen.append(
            (
                (await engine.get_metadata("wf"))["user_metadata"],
                (await engine.get_metadata("wf", "tagged"))["user_metadata"],
            )
        )
    state = evflow.replay([event async for event in evflow.read_events(store, "wf")], live=False)
    seen.append((state.metadata()["user_metadata"], state.metadata("tagged")["user_metadata"]))
    return seen


@settings(max_examples=30, deadline=None)
@given(
    run_md=st.none() | metadata,
    decorator_md=metadata,
    options_md=metadata,
    attached=st.lists(metadata, max_size=3),
)
def test_user_metadata_is_kept_as_given(
    run_md: dict[str, Any] | None,
    decorator_md: dict[str, Any],
    options_md: dict[str, Any],
    attached: list[dict[str, Any]],
) -> None:
    # The step's metadata: .options() merged over the decorator's, then each
    # attach_metadata merged over that (top-level keys: the later one wins).
    want_workflow = run_md if run_md is not None else {}
    want_step = merged(decorator_md, options_md, *attached)
    with tempfile.TemporaryDirectory() as tmp:
        seen = anyio.run(_round_trip, Path(tmp) / "store", run_md, decorator_md, options_md, attached)
    for workflow_md, step_md in seen:
        assert exactly(workflow_md) == exactly(want_workflow)
        assert exactly(step_md) == exactly(want_step)


# -- what the log cannot hold is refused where it is given -------------------------------------

UNLOGGABLE = [
    pytest.param({"n": 2**64}, id="int-above-2**64-1"),
    pytest.param({"n": [-(2**63) - 1]}, id="int-below--2**63"),
    pytest.param({"s": {"": "\ud800"}}, id="lone-surrogate-value"),
    pytest.param({"k\udfff": 1}, id="lone-surrogate-key"),
]


@evflow.step(name="plain", max_retries=0)
def plain() -> int:
    return 1


@pytest.mark.parametrize("bad", UNLOGGABLE)
def test_unloggable_metadata_is_refused_by_the_decorator_and_options(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="event log can hold"):
        evflow.step(name="s", metadata=bad)(plain.func)
    with pytest.raises(ValueError, match="event log can hold"):
        plain.options(metadata=bad)


@pytest.mark.anyio
@pytest.mark.parametrize("bad", UNLOGGABLE)
async def test_unloggable_metadata_is_refused_by_run_before_anything_is_written(
    bad: dict[str, Any], tmp_path: Path
) -> None:
    async with evflow.Engine(tmp_path / "store") as engine:
        with pytest.raises(ValueError, match="event log can hold"):
            await plain.step().run("wf", metadata=bad)
        assert await engine.list_all() == []


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [pytest.param(True, id="sync-step"), pytest.param(False, id="async-step")])
@pytest.mark.parametrize("bad", UNLOGGABLE)
async def test_unloggable_attach_metadata_fails_the_step_with_value_error(
    bad: dict[str, Any], sync: bool, tmp_path: Path
) -> None:
    # A step that attaches it fails like any step that raises; the run is not broken.
    def attach() -> int:
        evflow.attach_metadata(bad)
        return 1

    async def attach_async() -> int:
        return attach()

    step = evflow.step(name="attach", max_retries=0)(attach if sync else attach_async)
    async with evflow.Engine(tmp_path / "store") as engine:
        with pytest.raises(evflow.WorkflowExecutionError) as caught:
            await step.step().run("wf")
        assert isinstance(caught.value.__cause__, ValueError)
        assert "event log can hold" in str(caught.value.__cause__)
        assert await engine.get_status("wf") == "FAILED"
        assert (await engine.get_metadata("wf", "attach"))["user_metadata"] == {}
