"""The embedded file store: the store contract, crash recovery, damage, locking, readers,
and the workflow id -> file name mapping."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflow._codec import FRAME_HEADER, encode_event, frame, read_frames
from evflow._errors import CorruptLogError, StoreError, StoreLockedError
from evflow._events import StepStarted
from evflow.cli._verify import verify_store
from evflow.stores import FileStore, Store
from evflow.stores.file import _disk
from evflow.stores.file._journal import JournalEntry as _JournalEntry
from evflow.stores.file._layout import LOG_MAGIC, log_file_name
from evflow.stores.file._layout import log_header as _log_header
from evflow.stores.file._layout import workflow_id_from_name as _workflow_id_from_name
from evflow.stores.file._lock import lock_held
from evflow.stores.file._scan import scan_log as _scan_log
from store_contract import StoreContract, make_events, seqs

pytestmark = pytest.mark.anyio  # async tests run on asyncio and trio (conftest.py)

# -- the contract, in both durability modes ---------------------------------------------------


class TestFileStoreContract(StoreContract):
    async def make_store(self, tmp_path: Path) -> Store:
        store = FileStore(tmp_path / "store")
        await store.open()
        return store

    async def make_reader(self, tmp_path: Path) -> Store | None:
        store = FileStore(tmp_path / "store", read_only=True)
        await store.open()
        return store


class TestRelaxedFileStoreContract(TestFileStoreContract):
    async def make_store(self, tmp_path: Path) -> Store:
        store = FileStore(tmp_path / "store", durability="relaxed")
        await store.open()
        return store


# -- helpers ------------------------------------------------------------------------------------


@asynccontextmanager
async def running(
    path: Path, durability: Literal["strict", "relaxed"] = "strict"
) -> AsyncIterator[FileStore]:
    """A writer with ``run`` started, closed on the way out."""
    store = FileStore(path, durability=durability)
    await store.open()
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def reading(path: Path) -> AsyncIterator[FileStore]:
    async with FileStore(path, read_only=True) as store:
        yield store


def writer_alive(store_path: Path) -> bool:
    """Whether a live writer holds the store: the probe a reader makes before it overlays
    the journal, and that its ``owner_alive`` makes too."""
    return lock_held(str(store_path / "LOCK"))


def log_path(store_path: Path, workflow_id: str) -> Path:
    return store_path / "workflows" / log_file_name(workflow_id)


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def record_positions(path: Path) -> list[int]:
    return _scan_log(path.read_bytes()).events.starts


def append_journal(store_path: Path, *entries: _JournalEntry) -> None:
    with open(store_path / "journal", "ab") as f:
        for entry in entries:
            f.write(frame(msgspec.msgpack.encode(entry)))


def journal_entry(workflow_id: str, first: int, count: int, tag: str = "") -> _JournalEntry:
    events = make_events(workflow_id, first, count, tag=tag)
    return _JournalEntry(workflow_id=workflow_id, events=[encode_event(e) for e in events])


async def write_store(path: Path, logs: dict[str, int]) -> None:
    async with running(path) as store:
        for workflow_id, count in logs.items():
            await store.append(workflow_id, make_events(workflow_id, 1, count))


# -- torn tails ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut", [pytest.param(1, id="cut-1"), pytest.param(5, id="cut-5"), pytest.param(40, id="cut-40")]
)
async def test_torn_last_record_is_cut_on_open(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 5, "other": 3})
    log = log_path(path, "wf")
    last = record_positions(log)[-1]
    size = log.stat().st_size
    truncate(log, max(size - cut, last + 1))
    async with reading(path) as reader:  # a reader ignores the torn record, cuts nothing
        assert seqs(await reader.read("wf")) == [1, 2, 3, 4]
    assert log.stat().st_size == max(size - cut, last + 1)
    async with running(path) as store:
        assert seqs(await store.read("wf")) == [1, 2, 3, 4]
        assert log.stat().st_size == last
        await store.append("wf", make_events("wf", 5, 2, tag="again"))
        assert await store.read("wf") == make_events("wf", 1, 4) + make_events("wf", 5, 2, tag="again")
        assert seqs(await store.read("other")) == [1, 2, 3]
        assert await store.check() == []


async def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 3})
    log = log_path(path, "wf")
    size = log.stat().st_size
    append_bytes(log, bytes(4096))
    async with running(path) as store:
        assert seqs(await store.read("wf")) == [1, 2, 3]
        assert log.stat().st_size == size
        await store.append("wf", make_events("wf", 4, 1))
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2, 3, 4]


async def test_log_torn_inside_its_header_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 2})
    log = log_path(path, "wf")
    truncate(log, len(LOG_MAGIC) + 3)
    async with running(path) as store:
        assert await store.read("wf") == []
        assert await store.list_workflows() == []
        await store.append("wf", make_events("wf", 1, 1))
        assert seqs(await store.read("wf")) == [1]


def sample_log() -> tuple[bytes, list[int]]:
    """A log of 5 events and the byte position where each record starts."""
    records = [frame(encode_event(e)) for e in make_events("wf", 1, 5)]
    header = _log_header("wf")
    starts = [len(header) + sum(map(len, records[:i])) for i in range(len(records))]
    return header + b"".join(records), starts


def test_every_cut_of_a_log_reads_as_its_intact_prefix() -> None:
    buf, starts = sample_log()
    ends = [*starts[1:], len(buf)]
    for cut in range(len(buf) + 1):
        scan = _scan_log(buf[:cut])
        assert scan.damage is None, cut
        assert scan.events.starts == [s for s, e in zip(starts, ends, strict=True) if e <= cut], cut
        assert scan.workflow_id == ("wf" if cut >= starts[0] else None), cut
        assert scan.tail_damage is None, cut


def test_every_flipped_byte_before_the_last_record_is_damage() -> None:
    buf, starts = sample_log()
    for position in range(starts[-1]):
        damaged = bytearray(buf)
        damaged[position] ^= 0x5A
        scan = _scan_log(bytes(damaged))
        assert scan.damage is not None, position
        assert scan.damage[0] <= position, position
        assert len(scan.events.starts) < 5, position


def test_every_flipped_byte_of_the_last_record_is_damage() -> None:
    """The last record was written whole: a changed byte in it is damage, never a torn
    write (whatever field it hits), so nothing cuts it silently."""
    buf, starts = sample_log()
    for position in range(starts[-1], len(buf)):
        damaged = bytearray(buf)
        damaged[position] ^= 0x5A
        scan = _scan_log(bytes(damaged))
        assert scan.damage is None, position
        assert scan.tail_damage is not None, position
        assert scan.tail_damage[0] == starts[-1], position
        assert len(scan.events.starts) == 4, position


def test_zeros_from_a_sector_boundary_to_the_end_are_a_torn_write() -> None:
    """What an OS crash leaves when a log grew but its last sectors never reached the disk."""
    events = [*make_events("wf", 1, 2), StepStarted(seq=3, time=1.0, name="x" * 2000)]
    records = [frame(encode_event(e)) for e in events]
    buf = _log_header("wf") + b"".join(records)
    last = len(buf) - len(records[-1])
    boundary = (last // 512 + 1) * 512
    assert last + FRAME_HEADER.size < boundary < len(buf)  # the last record spans it
    scan = _scan_log(buf[:boundary] + bytes(len(buf) - boundary))
    assert (scan.damage, scan.tail_damage, scan.good_end) == (None, None, last)
    # The same zeros from anywhere else were not left by a crash.
    scan = _scan_log(buf[: boundary + 1] + bytes(len(buf) - boundary - 1))
    assert scan.tail_damage is not None and scan.tail_damage[0] == last


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(12, id="payload"),
        pytest.param(5, id="checksum"),
        pytest.param(3, id="length-high-byte"),
        pytest.param(0, id="length-low-byte"),
    ],
)
async def test_damaged_last_record_after_a_checkpoint_is_reported_not_cut(
    tmp_path: Path, offset: int
) -> None:
    path = tmp_path / "store"
    await write_store(path, {"bad": 5, "good": 2})  # closed: checkpointed, the journal is empty
    log = log_path(path, "bad")
    last = record_positions(log)[-1]
    flip_byte(log, last + offset)
    size = log.stat().st_size
    async with reading(path) as reader:
        with pytest.raises(CorruptLogError) as info:
            await reader.read("bad")
        assert info.value.position == last
        assert [(w, p) for w, p, _ in await reader.check()] == [("bad", last)]
    async with running(path) as store:
        with pytest.raises(CorruptLogError) as info:
            await store.read("bad")
        assert info.value.position == last
        assert "last record" in info.value.what
        with pytest.raises(CorruptLogError):
            store.append_nowait("bad", make_events("bad", 5, 1))
        assert sorted(await store.list_workflows()) == ["bad", "good"]
        assert seqs(await store.read("good")) == [1, 2]
    assert log.stat().st_size == size  # never cut


async def test_damaged_last_record_is_restored_from_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 5})
    # As if the writer died before a checkpoint: the journal still holds the last events.
    append_journal(path, journal_entry("wf", 4, 2))
    log = log_path(path, "wf")
    intact = log.read_bytes()
    last = record_positions(log)[-1]
    flip_byte(log, last + 12)
    async with reading(path) as reader:  # a dead writer's journal restores it for readers too
        assert await reader.read("wf") == make_events("wf", 1, 5)
        assert await reader.check() == []
        [(wid, position, what)] = await reader.notes()
        assert (wid, position) == ("wf", last)
        assert "the journal holds its event" in what
    async with running(path) as store:
        assert await store.read("wf") == make_events("wf", 1, 5)
        await store.append("wf", make_events("wf", 6, 1))
    assert log.read_bytes()[: len(intact)] == intact
    async with reading(path) as reader:
        assert (await reader.check(), await reader.notes()) == ([], [])


async def test_damaged_last_record_not_in_the_journal_is_damage(tmp_path: Path) -> None:
    """The journal continues the log after the damaged record: that one was checkpointed."""
    path = tmp_path / "store"
    await write_store(path, {"wf": 4})
    append_journal(path, journal_entry("wf", 5, 2))
    log = log_path(path, "wf")
    last = record_positions(log)[-1]
    flip_byte(log, last + 12)
    size = log.stat().st_size
    async with running(path) as store:
        with pytest.raises(CorruptLogError) as info:
            await store.read("wf")
        assert info.value.position == last
    assert log.stat().st_size == size


# -- logs that hold no event -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="zero-bytes"),
        pytest.param(LOG_MAGIC[:3], id="torn-magic"),
        pytest.param(_log_header("empty")[:-2], id="torn-header"),
        pytest.param(_log_header("empty"), id="header-only"),
        pytest.param(
            _log_header("empty") + frame(encode_event(make_events("empty", 1, 1)[0]))[:9], id="torn-event"
        ),
    ],
)
async def test_a_log_that_holds_no_event(tmp_path: Path, content: bytes) -> None:
    """What a crash between creating a log and writing its first event leaves: no reader
    lists it, verify notes it (not a problem), a writer removes it on open."""
    path = tmp_path / "store"
    await write_store(path, {"wf": 2})
    empty = log_path(path, "empty")
    empty.write_bytes(content)
    async with reading(path) as reader:
        assert await reader.list_workflows() == ["wf"]
        assert sorted(await reader.read_all()) == ["wf"]
        assert await reader.check() == []
        [(wid, _, what)] = await reader.notes()
        assert wid == "empty"
        assert "holds no event" in what
    async with running(path) as store:
        assert not empty.exists()
        assert await store.list_workflows() == ["wf"]
    async with reading(path) as reader:
        assert await reader.notes() == []


async def test_a_torn_tail_is_a_note(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 3})
    log = log_path(path, "wf")
    size = log.stat().st_size
    append_bytes(log, frame(encode_event(make_events("wf", 4, 1)[0]))[:10])
    async with reading(path) as reader:
        assert await reader.check() == []
        [(wid, position, what)] = await reader.notes()
        assert (wid, position) == ("wf", size)
        assert "incomplete last record (10 bytes" in what


# -- damage in the middle ------------------------------------------------------------------------


def overwrite(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def flip_byte(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x5A]))


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(12, id="payload"),
        pytest.param(5, id="checksum"),
        pytest.param(3, id="length-high-byte"),
        pytest.param(0, id="length-low-byte"),
    ],
)
async def test_damaged_record_mid_log_names_workflow_and_position(tmp_path: Path, offset: int) -> None:
    path = tmp_path / "store"
    await write_store(path, {"bad": 6, "good": 4})
    log = log_path(path, "bad")
    damaged_at = record_positions(log)[2]
    flip_byte(log, damaged_at + offset)
    size = log.stat().st_size

    async with reading(path) as reader:
        with pytest.raises(CorruptLogError) as info:
            await reader.read("bad")
        assert (info.value.workflow_id, info.value.position) == ("bad", damaged_at)
        assert seqs(await reader.read("good")) == [1, 2, 3, 4]
        problems = await reader.check()
        assert [(w, p) for w, p, _ in problems] == [("bad", damaged_at)]

    async with running(path) as store:
        with pytest.raises(CorruptLogError) as info:
            await store.read("bad")
        assert info.value.position == damaged_at
        assert str(damaged_at) in str(info.value)
        with pytest.raises(CorruptLogError):
            store.append_nowait("bad", make_events("bad", 7, 1))
        everything = await store.read_all()
        assert isinstance(everything["bad"], CorruptLogError)
        assert everything["bad"].position == damaged_at
        assert seqs(everything["good"]) == [1, 2, 3, 4]  # type: ignore[arg-type]
        assert sorted(await store.list_workflows()) == ["bad", "good"]
        await store.append("good", make_events("good", 5, 1))
        assert [(w, p) for w, p, _ in await store.check("bad")] == [("bad", damaged_at)]
        assert await store.check("good") == []
    assert log.stat().st_size == size  # never cut


async def test_corrupt_workflow_can_be_deleted(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"bad": 4})
    log = log_path(path, "bad")
    flip_byte(log, record_positions(log)[1] + 10)
    async with running(path) as store:
        assert await store.delete("bad") is True
        await store.append("bad", make_events("bad", 1, 2))
        assert seqs(await store.read("bad")) == [1, 2]


async def test_check_reports_seq_gaps_and_undecodable_records(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"fine": 2})
    records = [frame(encode_event(e)) for e in make_events("gappy", 1, 4)]
    gappy = log_path(path, "gappy")
    gappy.write_bytes(_log_header("gappy") + records[0] + records[2] + records[3])
    junk = log_path(path, "junk")
    junk.write_bytes(_log_header("junk") + records[0] + frame(b"\x93not an event") + records[1])
    async with reading(path) as reader:
        problems = await reader.check()
        by_workflow = {w: (p, what) for w, p, what in problems}
        assert sorted(by_workflow) == ["gappy", "junk"]
        assert by_workflow["gappy"][0] == record_positions(gappy)[1]
        assert "seq 3 where 2 was expected" in by_workflow["gappy"][1]
        assert by_workflow["junk"][0] == record_positions(junk)[1]
        with pytest.raises(CorruptLogError) as info:
            await reader.read("junk")
        assert info.value.position == record_positions(junk)[1]
        assert await reader.check("fine") == []


# -- journal redo ----------------------------------------------------------------------------------

CHILD_WRITES_THEN_WAITS = """
import sys, anyio
from evflow.stores import FileStore
from evflow._events import WorkflowStarted, StepStarted

async def main():
    store = FileStore(sys.argv[1])
    await store.open()
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        for workflow_id in sys.argv[2:]:
            store.append_nowait(workflow_id, [WorkflowStarted(seq=1, time=1.0, workflow_id=workflow_id)])
            for seq in range(2, 6):
                await store.append(workflow_id, [StepStarted(seq=seq, time=1.0, name=f"s{seq}")])
        print("ready", flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""

CHILD_HOLDS_LOCK = """
import sys, anyio
from evflow.stores import FileStore

async def main():
    async with FileStore(sys.argv[1]) as store:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

anyio.run(main)
"""


@asynccontextmanager
async def child(code: str, *args: str) -> AsyncIterator[anyio.abc.Process]:
    """A real Python subprocess running ``code``; yields once it printed ``ready``."""
    process = await anyio.open_process([sys.executable, "-c", code, *args])
    try:
        assert process.stdout is not None
        output = b""
        while b"ready" not in output:
            try:
                output += await process.stdout.receive()
            except anyio.EndOfStream:
                assert process.stderr is not None
                raise AssertionError(b"child failed: " + await process.stderr.receive()) from None
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await process.aclose()


@pytest.mark.slow  # a real subprocess
async def test_journal_redo_after_killed_writer(tmp_path: Path) -> None:
    """A writer killed after its journal fsync but before (some of) its log writes."""
    path = tmp_path / "store"
    async with child(CHILD_WRITES_THEN_WAITS, str(path), "wf", "other") as process:
        process.kill()  # SIGKILL: no close, no checkpoint; the journal holds everything
    journal_size = (path / "journal").stat().st_size
    assert journal_size > 0
    # Lose log writes that the page cache never got to disk: the last two records of "wf"
    # and the whole log of "other".
    log = log_path(path, "wf")
    truncate(log, record_positions(log)[3])
    log_path(path, "other").unlink()

    async with reading(path) as reader:  # a reader overlays a dead writer's journal
        assert seqs(await reader.read("wf")) == [1, 2, 3, 4, 5]
        assert seqs(await reader.read("wf", 3)) == [4, 5]
        assert sorted(await reader.list_workflows()) == ["other", "wf"]
        assert seqs((await reader.read_all())["other"]) == [1, 2, 3, 4, 5]  # type: ignore[arg-type]
    assert (path / "journal").stat().st_size == journal_size

    async with running(path) as store:
        assert (path / "journal").stat().st_size == 0  # redone, then checkpointed
        assert seqs(await store.read("wf")) == [1, 2, 3, 4, 5]
        assert seqs(await store.read("other")) == [1, 2, 3, 4, 5]
        await store.append("wf", [StepStarted(seq=6, time=1.0, name="s6")])
        assert await store.check() == []


async def test_journal_redo_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 3})
    append_journal(path, journal_entry("wf", 2, 3), journal_entry("wf", 5, 1), journal_entry("new", 1, 2))
    async with running(path) as store:
        assert await store.read("wf") == make_events("wf", 1, 5)
        assert await store.read("new") == make_events("new", 1, 2)
    async with running(path) as store:  # nothing is redone twice
        assert seqs(await store.read("wf")) == [1, 2, 3, 4, 5]


async def test_journal_deletion_then_new_incarnation(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 3})
    deleted = _JournalEntry(workflow_id="wf", deleted=True)
    # The old log is still on disk (the unlink was lost); the journal knows better.
    append_journal(path, journal_entry("wf", 4, 2, tag="old"), deleted, journal_entry("wf", 1, 2, tag="new"))
    async with running(path) as store:
        assert await store.read("wf") == make_events("wf", 1, 2, tag="new")
    # Now the log already is the new incarnation and the journal replays its history.
    append_journal(path, journal_entry("wf", 6, 1, tag="old"), deleted, journal_entry("wf", 1, 3, tag="new"))
    async with running(path) as store:
        assert await store.read("wf") == make_events("wf", 1, 3, tag="new")
    append_journal(path, deleted)
    async with running(path) as store:
        assert await store.read("wf") == []
        assert await store.list_workflows() == []


async def test_journal_gap_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 3})
    append_journal(path, journal_entry("wf", 6, 2))
    for _ in range(2):  # the lock is released after the failure
        with pytest.raises(StoreError, match=r"'wf'.*seq 3.*seq 6") as info:
            await FileStore(path).open()
        assert not isinstance(info.value, StoreLockedError)


async def test_damaged_journal_entry_before_its_end(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"a": 1})
    append_journal(path, journal_entry("a", 2, 1), journal_entry("b", 1, 1), journal_entry("c", 1, 1))
    journal = path / "journal"
    positions = read_frames(journal.read_bytes()).starts
    flip_byte(journal, positions[1] + 20)
    with pytest.raises(StoreError, match="journal is damaged at byte"):
        await FileStore(path).open()
    journal.rename(path / "journal.damaged")
    async with running(path) as store:
        assert seqs(await store.read("a")) == [1, 2]  # the entry before the damage was redone


async def test_torn_journal_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await write_store(path, {"wf": 2})
    append_journal(path, journal_entry("wf", 3, 1))
    append_bytes(path / "journal", frame(b"\x83\xa7journal" + b"x" * 50)[:30])
    async with running(path) as store:
        assert seqs(await store.read("wf")) == [1, 2, 3]
        assert (path / "journal").stat().st_size == 0


async def test_damage_in_what_the_journal_holds_is_repaired(tmp_path: Path) -> None:
    """After an OS crash, a log's appends since the last checkpoint may have holes (unsynced
    writes reach the disk in any order); the journal holds them all, so the log is cut
    there and redone. Damage before what the journal holds stays damage."""
    path = tmp_path / "store"
    await write_store(path, {"wf": 5, "new": 3, "old": 5})
    # As if a writer had died with wf checkpointed at seq 2, new never, old at seq 4.
    append_journal(path, journal_entry("wf", 3, 3), journal_entry("new", 1, 3), journal_entry("old", 5, 1))
    wf, new, old = (log_path(path, w) for w in ("wf", "new", "old"))
    overwrite(wf, record_positions(wf)[2], bytes(12))  # seq 3 lost; seqs 4 and 5 intact after it
    overwrite(new, 0, bytes(len(LOG_MAGIC)))  # even its header
    damaged_at = record_positions(old)[2]
    flip_byte(old, damaged_at + 12)

    async with reading(path) as reader:  # a reader overlays the dead writer's journal
        assert await reader.read("wf") == make_events("wf", 1, 5)
        assert await reader.read("new") == make_events("new", 1, 3)
        with pytest.raises(CorruptLogError):
            await reader.read("old")
    async with running(path) as store:
        assert await store.read("wf") == make_events("wf", 1, 5)
        assert await store.read("new") == make_events("new", 1, 3)
        with pytest.raises(CorruptLogError):
            await store.read("old")
        assert [(w, p) for w, p, _ in await store.check()] == [("old", damaged_at)]


# -- locking ---------------------------------------------------------------------------------------


async def test_second_writer_in_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path) as store:
        with pytest.raises(StoreLockedError) as info:
            await FileStore(path).open()
        assert info.value.pid == os.getpid()
        assert str(os.getpid()) in str(info.value)
        await store.append("wf", make_events("wf", 1, 1))  # the first writer is unharmed
        async with reading(path):
            assert writer_alive(path) is True
        assert writer_alive(path) is True
    async with running(path) as store:
        assert seqs(await store.read("wf")) == [1]
    async with reading(path):
        assert writer_alive(path) is False


async def test_readers_know_the_writing_engine(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    store.owner_id = "engine-1"
    async with store:
        assert await store.owner_alive("engine-1") is True
        assert await store.owner_alive("engine-2") is False
        async with reading(path) as reader:
            assert await reader.owner_alive("engine-1") is True
            assert await reader.owner_alive("engine-2") is False
            assert await reader.owner_alive(None) is False
    async with reading(path) as reader:
        assert await reader.owner_alive("engine-1") is False


@pytest.mark.slow  # a real subprocess
async def test_writer_in_another_process_is_named(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with child(CHILD_HOLDS_LOCK, str(path)) as process:
        with pytest.raises(StoreLockedError) as info:
            await FileStore(path).open()
        assert info.value.pid == process.pid
        async with reading(path) as reader:
            assert writer_alive(path) is True
            assert await reader.list_workflows() == []
        assert process.stdin is not None
        await process.stdin.send(b"\n")  # the child closes its store and exits
        assert await process.wait() == 0
    async with running(path):
        pass


@pytest.mark.slow  # a real subprocess
async def test_subprocess_is_refused_while_we_write(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path):
        result = await anyio.run_process(
            [sys.executable, "-c", CHILD_HOLDS_LOCK, str(path)], check=False, input=b"\n"
        )
        assert result.returncode != 0
        assert b"StoreLockedError" in result.stderr
        assert f"process {os.getpid()}".encode() in result.stderr


@pytest.mark.slow  # a real subprocess
async def test_lock_of_a_killed_writer_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with child(CHILD_HOLDS_LOCK, str(path)) as process:
        process.kill()
        await process.wait()
    assert (path / "LOCK").read_text().strip() == str(process.pid)  # left behind, harmless
    async with reading(path):
        assert writer_alive(path) is False
    async with running(path) as store:
        await store.append("wf", make_events("wf", 1, 1))
        assert (path / "LOCK").read_text().strip() == str(os.getpid())


CHILD_ENGINE_WRITES = """
import sys, anyio, evflow

@evflow.step(name="double")
def double(x: int) -> int:
    return 2 * x

async def main():
    async with evflow.Engine(sys.argv[1]):
        for index in range(5):
            assert await double.step(index).run(f"b{index}") == 2 * index
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        for index in range(5, 10):
            assert await double.step(index).run(f"b{index}") == 2 * index

anyio.run(main)
"""


@pytest.mark.slow  # a real subprocess
async def test_deleting_the_store_under_a_writer_stops_its_writes(tmp_path: Path) -> None:
    """``rm -rf`` of a live writer's directory lets a new engine create and lock a new
    store there; the old writer must then refuse to write instead of joining in."""
    path = tmp_path / "store"
    async with running(path) as store:
        await store.append("a", make_events("a", 1, 3))
        await anyio.to_thread.run_sync(shutil.rmtree, path)
        async with child(CHILD_ENGINE_WRITES, str(path)) as process:
            with pytest.raises(StoreError, match="deleted or replaced") as info:
                await store.append("b0", make_events("b0", 1, 2))  # a log the new engine wrote
            assert "refuses further writes" in str(info.value)
            with pytest.raises(StoreError, match="deleted or replaced"):
                store.append_nowait("a", make_events("a", 4, 1))
            assert process.stdin is not None
            await process.stdin.send(b"\n")  # the new engine writes on, then closes
            assert await process.wait() == 0
    async with reading(path) as reader:
        assert await reader.check() == []
        everything = await reader.read_all()
        assert sorted(everything) == [f"b{index}" for index in range(10)]
        problems, checked = await verify_store(reader)
        assert (problems, checked) == ([], 10)


# -- readers while a writer writes -----------------------------------------------------------------


async def test_readers_read_while_a_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "store"
    ids = [f"wf-{i}" for i in range(5)]
    rounds = 40
    done = False

    async def write(store: FileStore) -> None:
        nonlocal done
        for seq in range(1, rounds + 1):
            for workflow_id in ids:
                store.append_nowait(workflow_id, make_events(workflow_id, seq, 1))
            await store.flush()
        done = True

    async with running(path) as store:
        await store.append("seed", make_events("seed", 1, 1))
        async with reading(path) as reader, anyio.create_task_group() as tg:
            tg.start_soon(write, store)
            seen = dict.fromkeys(ids, 0)
            while not done:
                for workflow_id in ids:
                    got = seqs(await reader.read(workflow_id))
                    assert got == list(range(1, len(got) + 1))  # always a clean prefix
                    assert len(got) >= seen[workflow_id]
                    seen[workflow_id] = len(got)
                await anyio.lowlevel.checkpoint()
        async with reading(path) as reader:
            everything = await reader.read_all()
            assert {w: seqs(v) for w, v in everything.items()} == {  # type: ignore[arg-type]
                **{w: list(range(1, rounds + 1)) for w in ids},
                "seed": [1],
            }


async def test_reader_waits_for_events(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path) as store, reading(path) as reader:
        await store.append("wf", make_events("wf", 1, 2))
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                await reader.wait_for_events("wf", 2, poll_interval=0.01)
                assert seqs(await reader.read("wf", 2)) == [3]

            tg.start_soon(wait)
            await anyio.lowlevel.checkpoint()
            await store.append("wf", make_events("wf", 3, 1))
        await reader.wait_for_events("wf", 0)  # already there: returns at once


async def test_reader_of_a_missing_directory_sees_an_empty_store(tmp_path: Path) -> None:
    async with reading(tmp_path / "nothing") as reader:
        assert await reader.list_workflows() == []
        assert await reader.read("wf") == []
        assert await reader.read_all() == {}
        assert await reader.check() == []
        assert writer_alive(tmp_path / "nothing") is False
        with pytest.raises(StoreError, match="read-only"):
            reader.append_nowait("wf", make_events("wf", 1, 1))
        with pytest.raises(StoreError, match="read-only"):
            await reader.delete("wf")
    assert not (tmp_path / "nothing").exists()


# -- group commit, checkpoints, errors, lifecycle -------------------------------------------------


async def test_concurrent_appends_share_batches(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path) as store:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(store.append, f"wf-{i}", make_events(f"wf-{i}", 1, 2))
        stats = store.statistics()
        assert stats.events == 400
        assert stats.batches < 200
        assert stats.fsyncs == stats.batches  # one journal fsync per batch


async def test_events_nobody_flushes_are_committed_by_themselves(tmp_path: Path) -> None:
    # A StepStarted is queued with append_nowait and never flushed by the engine: the
    # writer thread commits it after LAZY_COMMIT_SECONDS, so readers see running steps.
    path = tmp_path / "store"
    async with running(path) as store, reading(path) as reader:
        store.append_nowait("wf", make_events("wf", 1, 2))
        with anyio.fail_after(30):  # a bound on a hang, not a speed requirement
            await reader.wait_for_events("wf", 1, poll_interval=0.01)
        assert seqs(await reader.read("wf")) == [1, 2]
        assert store.statistics().batches == 1


async def test_new_workflow_whose_log_file_already_exists(tmp_path: Path) -> None:
    # seq 1 of a new workflow first tries O_CREAT | O_EXCL; a log file already there
    # (a header written just before a crash) is appended to instead.
    path = tmp_path / "store"
    async with running(path):
        pass
    (path / "workflows" / log_file_name("wf")).write_bytes(_log_header("wf"))
    async with running(path) as store:
        await store.append("wf", make_events("wf", 1, 2))
        await store.append("other", make_events("other", 1, 1))
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2]
        assert seqs(await reader.read("other")) == [1]
        assert await reader.check() == []


async def test_relaxed_mode_writes_no_journal(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path, durability="relaxed") as store:
        await store.append("wf", make_events("wf", 1, 3))
        assert (path / "journal").stat().st_size == 0
        assert store.statistics().fsyncs == 0
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2, 3]


async def test_checkpoint_empties_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path, checkpoint_bytes=1)
    await store.open()
    try:
        for seq in range(1, 6):
            await store.append("wf", make_events("wf", seq, 1))  # no run(): flush commits
            assert store.statistics().journal_bytes == 0
            # emptied: what is left is the zeros allocated ahead of the next batches
            assert not (path / "journal").read_bytes().strip(b"\0")
        assert store.statistics().checkpoints >= 5
    finally:
        await store.close()
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2, 3, 4, 5]


async def test_more_workflows_than_open_files(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path) as store:
        store._max_fds = 3
        for seq in range(1, 4):
            for i in range(10):
                await store.append(f"wf-{i}", make_events(f"wf-{i}", seq, 1))
        assert len(store._fds) <= 3
    async with reading(path) as reader:
        everything = await reader.read_all()
        assert all(seqs(v) == [1, 2, 3] for v in everything.values())  # type: ignore[arg-type]
        assert len(everything) == 10


async def test_write_error_is_raised_by_flush_and_stops_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    async with running(path) as store:
        await store.append("wf", make_events("wf", 1, 1))

        def disk_full(fd: int, data: object, offset: int = 0) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(_disk, "write_all", disk_full)
        monkeypatch.setattr(_disk, "pwrite_all", disk_full)  # the journal's writes
        store.append_nowait("wf", make_events("wf", 2, 1))
        with pytest.raises(StoreError) as info:
            await store.flush()
        assert isinstance(info.value.__cause__, OSError)
        assert "No space left" in str(info.value)
        with pytest.raises(StoreError):
            store.append_nowait("other", make_events("other", 1, 1))
        with pytest.raises(StoreError):
            await store.flush()
        monkeypatch.undo()
    async with running(path) as store:  # reopening recovers
        assert seqs(await store.read("wf")) == [1]
        await store.append("wf", make_events("wf", 2, 1))


async def test_close_twice_and_without_run(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    await store.close()  # never opened
    store = FileStore(path)
    await store.open()
    store.append_nowait("wf", make_events("wf", 1, 2))
    await store.close()  # writes what is queued though run() never ran
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append_nowait("wf", make_events("wf", 3, 1))
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2]


async def test_concurrent_closes_wait_for_each_other(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    await store.open()
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        store.append_nowait("wf", make_events("wf", 1, 3))
        tg.start_soon(store.close)
        tg.start_soon(store.close)
    await store.close()
    async with reading(path) as reader:
        assert seqs(await reader.read("wf")) == [1, 2, 3]
        assert writer_alive(path) is False


async def test_run_cancelled_then_flush(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = FileStore(path)
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            await store.append("wf", make_events("wf", 1, 1))
            store.append_nowait("wf", make_events("wf", 2, 1))
            tg.cancel_scope.cancel()  # run() still writes what is queued on its way out
        async with reading(path) as reader:
            assert seqs(await reader.read("wf")) == [1, 2]
        await store.append("wf", make_events("wf", 3, 1))  # flush commits by itself now
        assert seqs(await store.read("wf")) == [1, 2, 3]
    finally:
        await store.close()


async def test_store_layout_and_marker(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with running(path) as store:
        assert store.url == f"file://{path}"
        await store.append("wf", make_events("wf", 1, 1))
        assert sorted(os.listdir(path)) == ["LOCK", "evflow-store.json", "journal", "workflows"]
        assert os.listdir(path / "workflows") == ["wf.log"]
    assert json.loads((path / "evflow-store.json").read_text()) == {"format": 1}
    (path / "evflow-store.json").write_text('{"format": 2}')
    for store in (FileStore(path), FileStore(path, read_only=True)):
        with pytest.raises(StoreError, match="newer evflow"):
            await store.open()


async def test_refuses_to_initialise_an_unrelated_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an evflow store"):
        await FileStore(tmp_path).open()
    assert os.listdir(tmp_path) == ["notes.txt"]


async def test_long_and_odd_ids_stay_inside_the_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    ids = ["../escape", "a/b", "..", ".", "/abs", "x\\y", "%41", "A", "a", "é" * 256, "z" * 256]
    async with running(path) as store:
        for workflow_id in ids:
            await store.append(workflow_id, make_events(workflow_id, 1, 1))
    assert sorted(os.listdir(tmp_path)) == ["store"]
    assert sorted(os.listdir(path)) == ["LOCK", "evflow-store.json", "journal", "workflows"]
    names = os.listdir(path / "workflows")
    assert len(names) == len(ids)
    assert sum(name.startswith("~") for name in names) == 2
    async with reading(path) as reader:
        assert sorted(await reader.list_workflows()) == sorted(ids)
        assert await reader.check() == []
    async with running(path) as store:
        assert sorted(await store.list_workflows()) == sorted(ids)


# -- id -> file name ------------------------------------------------------------------------------

_ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789_-.%~")
_ids = st.text(min_size=1, max_size=256)


def _check_name(workflow_id: str) -> str:
    name = log_file_name(workflow_id)
    assert name.endswith(".log")
    assert set(name) <= _ALLOWED
    assert not name.startswith(".")
    assert len(name) <= 204
    assert name == name.lower()  # so case-insensitive file systems keep ids apart
    if not name.startswith("~"):
        assert _workflow_id_from_name(name) == workflow_id
    else:
        assert _workflow_id_from_name(name) is None
    return name


@given(st.lists(_ids, unique=True, max_size=30))
def test_file_names_are_injective(ids: list[str]) -> None:
    assert len({_check_name(workflow_id) for workflow_id in ids}) == len(ids)


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=40))
def test_ids_differing_in_case_get_different_names(workflow_id: str) -> None:
    for variant in {workflow_id.lower(), workflow_id.upper(), workflow_id.swapcase()} - {workflow_id}:
        assert _check_name(variant) != _check_name(workflow_id)


@pytest.mark.parametrize(
    ("workflow_id", "name"),
    [
        ("wf-1_a.b", "wf-1_a.b.log"),
        ("..", "%2e..log"),
        (".", "%2e.log"),
        ("../x", "%2e.%2fx.log"),
        ("a/b", "a%2fb.log"),
        ("a\\b", "a%5cb.log"),
        ("A", "%41.log"),
        ("%", "%25.log"),
        ("~x", "%7ex.log"),
        ("é", "%c3%a9.log"),
        (" ", "%20.log"),
    ],
)
def test_file_name_examples(workflow_id: str, name: str) -> None:
    assert log_file_name(workflow_id) == name
    assert _check_name(workflow_id) == name


@pytest.mark.parametrize("workflow_id", ["x" * 201, "X" * 67, "é" * 34, "\U0001f600" * 256])
def test_long_ids_are_hashed(workflow_id: str) -> None:
    name = _check_name(workflow_id)
    assert name.startswith("~") and len(name) == 1 + 64 + 4


@pytest.mark.parametrize(
    "name", ["A.log", "%2E.log", "%41", ".hidden.log", "%zz.log", "%4.log", "a%2fb.txt", "+1.log", "%+1.log"]
)
def test_names_this_store_never_writes_are_not_ids(name: str) -> None:
    assert _workflow_id_from_name(name) is None


async def test_first_read_all_after_open_sees_later_writes(tmp_path: Path) -> None:
    """The writer keeps its open scan for the first read_all; writes in between count."""
    path = tmp_path / "store"
    await write_store(path, {"kept": 2, "grown": 2, "deleted": 2, "x" * 300: 2})
    async with running(path) as store:
        await store.append("grown", make_events("grown", 3, 1))
        await store.delete("deleted")
        await store.append("new", make_events("new", 1, 1))
        everything = await store.read_all()
        assert {w: seqs(v) for w, v in everything.items()} == {  # type: ignore[arg-type]
            "kept": [1, 2],
            "grown": [1, 2, 3],
            "new": [1],
            "x" * 300: [1, 2],
        }
        assert everything["kept"] == make_events("kept", 1, 2)
        await store.append("kept", make_events("kept", 3, 1))
        assert seqs((await store.read_all())["kept"]) == [1, 2, 3]  # type: ignore[arg-type]


CHILD_LEAVES_STORE_OPEN = """
import sys, anyio
from evflow.stores import FileStore
from evflow._events import WorkflowStarted

async def main():
    store = FileStore(sys.argv[1])
    await store.open()
    await store.append("wf", [WorkflowStarted(seq=1, time=1.0, workflow_id="wf")])
    print("returning without close", flush=True)

anyio.run(main)
"""


@pytest.mark.slow  # a real subprocess
async def test_an_unclosed_writer_never_keeps_the_process_alive(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with anyio.fail_after(120):  # a hang fails the test instead of the suite
        result = await anyio.run_process([sys.executable, "-c", CHILD_LEAVES_STORE_OPEN, str(path)])
    assert b"returning" in result.stdout
    async with running(path) as store:  # its lock died with it
        assert seqs(await store.read("wf")) == [1]


# -- a small disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 2 MiB tmpfs of its own (mounting needs root and Linux)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


async def test_a_small_disk_holds_workflows(small_disk: Path) -> None:
    path = small_disk / "store"
    async with running(path) as store:
        for index in range(40):
            await store.append(f"wf{index}", make_events(f"wf{index}", 1, 6))
    async with running(path) as store:
        everything = await store.read_all()
        assert len(everything) == 40
        assert all(seqs(events) == [1, 2, 3, 4, 5, 6] for events in everything.values())  # type: ignore[arg-type]


async def test_a_full_disk_fails_with_a_clear_error(small_disk: Path) -> None:
    path = small_disk / "store"
    written: list[str] = []
    async with running(path) as store:
        with pytest.raises(StoreError) as info:
            for index in itertools.count():
                workflow_id = f"wf{index}"
                await store.append(workflow_id, make_events(workflow_id, 1, 5, tag="x" * 20_000))
                written.append(workflow_id)
        message = str(info.value)
        assert "the disk is full" in message
        assert re.search(r"a batch of 5 event\(s\) \(\d+ bytes\)", message)
        assert re.search(r"\d+ bytes free on ", message)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
    assert len(written) >= 4  # 2 MiB hold each ~100 kB workflow twice (journal and log)
    async with reading(path) as reader:  # everything acknowledged is there
        everything = await reader.read_all()
        assert all(seqs(everything[w]) == [1, 2, 3, 4, 5] for w in written)  # type: ignore[arg-type]
        assert await reader.check() == []
    # Recovery redoes the failed batch from the journal: no room for that either.
    with pytest.raises(StoreError, match="the disk is full: opening the store"):
        await FileStore(path).open()
    await anyio.run_process(["mount", "-o", "remount,size=4m", str(small_disk)])
    async with running(path) as store:  # given room, a writer recovers and goes on
        assert [seqs(await store.read(w)) for w in written] == [[1, 2, 3, 4, 5]] * len(written)
        await store.append("small", make_events("small", 1, 2))
    async with reading(path) as reader:
        assert await reader.check() == []
