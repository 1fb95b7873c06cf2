"""Golden logs: logs written by earlier releases must keep folding to the same metadata.

``tests/data/v<N>/`` holds what ``tests/data/make_golden.py`` wrote when format version N
was current: a file-store directory, the same events as JSON lines of base64 msgpack, and
the metadata the writing engine reported (``expected.json``). A change to the event
schema, the value encoding, the framing, the store layout or the fold that would misread
an old log fails here. Never regenerate an existing version to make this pass.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import evflow
from evflow._codec import decode_event, encode_event
from evflow._events import EVENT_TYPES, FORMAT_VERSION, AnyEvent, WorkflowStarted
from evflow.stores import FileStore

DATA = Path(__file__).parent / "data"
VERSIONS = sorted(DATA.glob("v[0-9]*"), key=lambda p: int(p.name[1:]))
versions = pytest.mark.parametrize("version", [pytest.param(v, id=v.name) for v in VERSIONS])


def expected_of(version: Path) -> dict[str, Any]:
    expected: dict[str, Any] = json.loads((version / "expected.json").read_text())
    return expected


def metadata_of(state: evflow.WorkflowState) -> dict[str, Any]:
    return {"workflow": state.metadata(), "steps": {name: state.metadata(name) for name in state.steps}}


def without_output(expected: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in expected.items() if k != "output_repr"}


def exported_events(version: Path) -> dict[str, list[AnyEvent]]:
    """The JSON-lines export: each line's msgpack decoded, grouped by workflow."""
    out: dict[str, list[AnyEvent]] = {}
    for line in (version / "events.jsonl").read_text().splitlines():
        record = json.loads(line)
        event = decode_event(base64.b64decode(record["msgpack"]))
        assert (type(event).__name__, event.seq) == (record["type"], record["seq"])
        out.setdefault(record["workflow_id"], []).append(event)
    return out


async def stored_events(store: Path) -> dict[str, list[AnyEvent]]:
    async with FileStore(store, read_only=True) as reader:
        return {wid: await reader.read(wid) for wid in await reader.list_workflows()}


def test_the_current_format_has_golden_logs() -> None:
    """Bumping FORMAT_VERSION comes with a run of make_golden.py for the new version."""
    assert VERSIONS, "no golden logs under tests/data"
    assert VERSIONS[-1].name == f"v{FORMAT_VERSION}"


def test_the_current_golden_logs_cover_every_event_type() -> None:
    """A new event type is a new format version (older readers cannot decode it), whose
    golden logs must use it: add a scenario to make_golden.py."""
    current = DATA / f"v{FORMAT_VERSION}"
    seen = Counter(type(e).__name__ for events in exported_events(current).values() for e in events)
    assert set(EVENT_TYPES) <= set(seen), f"no golden log uses {sorted(set(EVENT_TYPES) - set(seen))}"


@versions
def test_the_exported_events_fold_to_the_recorded_metadata(version: Path) -> None:
    expected = expected_of(version)
    exported = exported_events(version)
    assert set(exported) == set(expected)
    for wid, events in exported.items():
        assert metadata_of(evflow.replay(events, live=False)) == without_output(expected[wid]), wid


@versions
def test_the_stored_logs_read_back_to_the_exported_events(version: Path) -> None:
    stored = anyio.run(stored_events, version / "store")
    assert stored == exported_events(version)


@versions
def test_the_stored_logs_fold_to_the_recorded_metadata(version: Path) -> None:
    expected = expected_of(version)
    stored = anyio.run(stored_events, version / "store")
    assert set(stored) == set(expected)
    for wid, events in stored.items():
        for as_of in range(1, len(events) + 1):  # every prefix folds too
            evflow.replay(events, as_of=as_of, live=False)
        assert metadata_of(evflow.replay(events, live=False)) == without_output(expected[wid]), wid


@versions
@pytest.mark.anyio
async def test_an_engine_opened_on_old_logs_reports_the_recorded_metadata_and_outputs(
    version: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(version / "store", store)  # an engine takes the lock and checkpoints
    expected = expected_of(version)
    async with evflow.Engine(store) as engine:
        listed = dict(await engine.list_all())
        assert listed == {wid: want["workflow"]["status"] for wid, want in expected.items()}
        for wid, want in expected.items():
            assert await engine.get_metadata(wid) == want["workflow"], wid
            for name, step in want["steps"].items():
                assert await engine.get_metadata(wid, name) == step, (wid, name)
            if "output_repr" in want:
                assert repr(await engine.get_output(wid)) == want["output_repr"], wid


@versions
@pytest.mark.anyio
async def test_read_events_reads_old_logs(version: Path) -> None:
    exported = exported_events(version)
    for wid, events in exported.items():
        assert [e async for e in evflow.read_events(version / "store", wid)] == events


@versions
def test_old_logs_decode_with_the_version_they_were_written_in(version: Path) -> None:
    for wid, events in exported_events(version).items():
        first = events[0]
        assert isinstance(first, WorkflowStarted)
        assert first.version == int(version.name[1:]), wid


@pytest.mark.anyio
async def test_a_new_log_records_its_format_version() -> None:
    @evflow.step(name="one")
    def one() -> int:
        return 1

    async with evflow.Engine("memory://") as engine:
        await one.step().run("wf")
        first = (await engine.store.read("wf"))[0]
    # Version 1 is the default, so a log without the field (every log of format 1) reads
    # as version 1; any later version is written out explicitly.
    assert decode_event(encode_event(first)).version == FORMAT_VERSION
    later = msgspec.structs.replace(first, version=FORMAT_VERSION + 1)
    assert msgspec.msgpack.decode(encode_event(later))["version"] == FORMAT_VERSION + 1


def test_a_log_from_a_newer_format_is_refused() -> None:
    newer = WorkflowStarted(seq=1, time=1.0, workflow_id="wf", output=None, version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="newer"):
        evflow.replay([newer])
