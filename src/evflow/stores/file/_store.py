"""The embedded file store (the default): one append-only log per workflow, group-committed
through a write-ahead journal, one writer process at a time and any number of readers.

The package's modules, bottom up: ``_io`` (the seam every change to the disk goes
through), ``_disk`` (those changes, and reads), ``_layout`` (names, headers, the marker),
``_scan`` (frames, torn or damaged), ``_lock`` (the writer lock), ``_journal`` (entries,
preallocation, a reader's overlay), ``_writer`` (the writer thread and its group commit),
``_recovery`` (what a writer does on open), ``_reader`` (decoding, listing, verifying),
and this one, the ``Store``. docs/storage.md describes the format and the guarantees.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from ..._codec import encode_event
from ..._errors import CorruptLogError, StoreError
from ..._events import AnyEvent, Event
from ..._signal import loop_notifier
from .._base import Store, check_sequence
from . import _disk
from ._journal import Overlay, read_overlay
from ._layout import check_marker, refuse_foreign_directory
from ._lock import acquire_lock, file_id, live_owner
from ._reader import check, list_files, list_ids, load, stat_stamps
from ._recovery import Recovery
from ._scan import LogScan

__all__ = ["DEFAULT_CHECKPOINT_BYTES", "FileStore", "FileStoreStatistics"]

DEFAULT_CHECKPOINT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileStoreStatistics:
    """Counters of a writer ``FileStore`` since ``open`` (see ``FileStore.statistics``)."""

    batches: int
    events: int
    fsyncs: int
    checkpoints: int
    queued_events: int
    journal_bytes: int


class FileStore(Recovery, Store):
    """Embedded file store: one writer process at a time, any number of readers.

    ``durability="strict"`` (default): ``flush`` returns once the events are fsynced,
    one fsync per group-committed batch. ``"relaxed"``: no fsync until ``close``; an OS
    crash may lose the latest events. ``read_only=True`` opens a reader: no lock, no
    writes, safe while a writer appends. Also an async context manager (open/close).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["strict", "relaxed"] = "strict",
        read_only: bool = False,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    ) -> None:
        text = os.fspath(path)
        if text.startswith("file://"):
            text = text[len("file://") :]
        if durability not in ("strict", "relaxed"):
            raise ValueError(f"durability must be 'strict' or 'relaxed', not {durability!r}")
        super().__init__(
            os.path.abspath(text), strict=durability == "strict", checkpoint_bytes=checkpoint_bytes
        )
        self.durability = durability
        self.read_only = read_only
        self._state: Literal["new", "open", "closed"] = "new"
        self._running = False
        self._run_stop: anyio.Event | None = None

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else self.durability
        return f"<FileStore {self.path!r} {mode} {self._state}>"

    async def __aenter__(self) -> FileStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def statistics(self) -> FileStoreStatistics:
        """Counters since ``open``: batches committed, events written, fsyncs, checkpoints."""
        filling = self._batches.filling
        return FileStoreStatistics(
            batches=self._stats["batches"],
            events=self._stats["events"],
            fsyncs=self._stats["fsyncs"],
            checkpoints=self._stats["checkpoints"],
            queued_events=0 if filling is None else filling.n_events,
            journal_bytes=self._journal_size,
        )

    # -- open / close ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store. A writer takes the lock (``StoreLockedError`` naming the holder's
        pid if another live writer has it), creates the layout and recovers from a crash."""
        if self._state != "new":
            raise StoreError(f"{self.url}: a FileStore is opened once (it is {self._state})")
        if sys.platform == "win32":
            raise StoreError("the embedded file store needs a POSIX system (flock); use PostgreSQL")
        if self.read_only:
            await anyio.to_thread.run_sync(check_marker, self.path, self.url, False)
        else:
            await anyio.to_thread.run_sync(self._open_writer)
            self._start_writer(loop_notifier())
        self._state = "open"

    def _open_writer(self) -> None:
        self._last_seq.clear()  # a failed open may be retried
        self._corrupt.clear()
        self._warm.clear()
        self._damaged.clear()
        self._dirty.clear()
        self._dir_dirty = False
        _disk.makedirs(self.path, exist_ok=True)
        refuse_foreign_directory(self.path, self.url)  # before the LOCK file is created in it
        self._lock_fd = acquire_lock(self._lock_path, self.path, self.owner_id)
        try:
            self._lock_id = file_id(os.fstat(self._lock_fd))
            check_marker(self.path, self.url, True)
            _disk.makedirs(self._workflows_dir, exist_ok=True)
            # Not O_APPEND: batches are written at the journal's logical end, inside space
            # preallocated with zeros (see _journal.reserve).
            self._journal_fd = _disk.open(self._journal_path, os.O_RDWR | os.O_CREAT, 0o644)
            _disk.fsync_dir(self.path)  # the marker, journal and workflows/ entries themselves
            self._recover()
        except BaseException as exc:
            self._warm.clear()
            self._release()
            if isinstance(exc, OSError) and exc.errno in _disk.DISK_FULL:
                raise StoreError(
                    f"{self.url}: the disk is full: opening the store (recovering from its journal) "
                    f"failed ({exc}; {_disk.free_bytes_at(self.path)} bytes free on {self.path}); nothing "
                    "was lost: free some space and open it again"
                ) from exc
            raise

    async def close(self) -> None:
        """Make everything queued durable, stop ``run``, checkpoint, release the lock.

        Safe to call twice and when ``run`` never started. Raises ``StoreError`` when the
        final write fails (the lock is released anyway; the next open recovers).
        """
        if self._state != "open":
            self._state = "closed"
            return
        if self.read_only:
            self._state = "closed"
            return
        if not self._batches.begin_close():  # another task is closing it: wait for that
            with anyio.CancelScope(shield=True):
                await self._batches.closed()
            return
        if self._run_stop is not None:
            self._run_stop.set()
        # Shielded: a close from a cancelled scope must still release the lock and fds.
        with anyio.CancelScope(shield=True):
            try:
                broken_before = self._broken
                # The writer thread writes what is queued, checkpoints and exits.
                await anyio.to_thread.run_sync(self._stop_writer)
                error = self._broken if self._broken is not broken_before else None
            finally:
                self._warm.clear()
                await anyio.to_thread.run_sync(self._release)
                self._state = "closed"
                self._batches.end_close()
        if error is not None:
            raise error

    # -- write path ---------------------------------------------------------------------------

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events (encoded here, once); ``SequenceConflictError`` if a seq does not
        follow, ``CorruptLogError`` if the workflow's log is damaged. Never blocks."""
        if self._state != "open" or self.read_only or self._batches.closing:
            raise StoreError(f"{self.url}: cannot append: the store is {self._describe_state()}")
        if self._broken is not None:
            raise self._broken
        corrupt = self._corrupt.get(workflow_id)
        if corrupt is not None:
            raise corrupt
        last = check_sequence(workflow_id, self._last_seq.get(workflow_id, 0), events)
        if not events:
            return
        if self._warm:
            self._warm.pop(workflow_id, None)
        self._enqueue(workflow_id, [encode_event(event) for event in events])
        self._last_seq[workflow_id] = last

    def _describe_state(self) -> str:
        if self.read_only:
            return "read-only"
        if self._batches.closing or self._state == "closed":
            return "closed"
        return "not open" if self._state == "new" else self._state

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Wait until ``close`` or cancellation, then make what is queued durable.

        The group commit itself runs on the store's writer thread from ``open`` to
        ``close``, so ``flush`` works with or without ``run``; on its way out ``run``
        hurries the batch being filled instead of leaving it for LAZY_COMMIT_SECONDS.
        """
        if self.read_only or self._state != "open" or self._batches.closing:
            task_status.started()
            return
        if self._running:
            raise RuntimeError(f"{self.url}: FileStore.run is already running")
        self._running = True
        stop = self._run_stop = anyio.Event()
        task_status.started()
        try:
            await stop.wait()
        finally:
            self._running = False
            self._run_stop = None
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.flush()  # an error is the flushers' to raise, not run's

    # -- read path ----------------------------------------------------------------------------

    async def read(self, workflow_id: str, after: int = 0) -> list[AnyEvent]:
        """Events with ``seq > after`` ([] for an unknown id); ``CorruptLogError`` when the
        log is damaged before its end. A writer sees everything flushed."""
        corrupt = self._corrupt.get(workflow_id)
        if corrupt is not None:
            raise corrupt
        return await anyio.to_thread.run_sync(self._read_sync, workflow_id, after)

    def _read_sync(self, workflow_id: str, after: int) -> list[AnyEvent]:
        overlay = self._journal_overlay()
        return load(workflow_id, self._log_path(workflow_id), after, overlay)

    def _journal_overlay(self) -> dict[str, Overlay] | None:
        """What a reader adds from a dead writer's journal (a writer: nothing)."""
        return read_overlay(self._journal_path, self._lock_path) if self.read_only else None

    async def list_workflows(self) -> list[str]:
        """Ids of every workflow with a log (a writer includes those only queued)."""
        if not self.read_only and self._state == "open":
            return [*self._last_seq, *self._corrupt]
        return await anyio.to_thread.run_sync(self._list_sync)

    def _list_sync(self) -> list[str]:
        return list_ids(self._workflows_dir, self._journal_overlay())

    async def read_all(self) -> dict[str, list[AnyEvent] | CorruptLogError]:
        """Every workflow's events (or its ``CorruptLogError``), read in one thread hop."""
        known: list[str] | None = None
        warm: dict[str, LogScan] = {}
        if not self.read_only and self._state == "open":
            known = list(self._last_seq)  # snapshot: the loop keeps adding to it
            warm, self._warm = self._warm, {}
        corrupt = dict(self._corrupt)
        return await anyio.to_thread.run_sync(self._read_all_sync, known, corrupt, warm)

    def _read_all_sync(
        self, known: list[str] | None, corrupt: dict[str, CorruptLogError], warm: dict[str, LogScan]
    ) -> dict[str, list[AnyEvent] | CorruptLogError]:
        with _disk.gc_paused():
            overlay = self._journal_overlay()
            if known is not None:
                pairs = [(w, self._log_path(w)) for w in known]
            else:
                pairs = list_files(self._workflows_dir)
                if overlay:
                    listed = {w for w, _ in pairs}
                    pairs += [(w, self._log_path(w)) for w in overlay if w not in listed]
            out: dict[str, list[AnyEvent] | CorruptLogError] = dict(corrupt)
            for workflow_id, path in pairs:
                if workflow_id in corrupt:
                    continue
                try:
                    events = load(workflow_id, path, 0, overlay, warm.get(workflow_id))
                except CorruptLogError as exc:
                    out[workflow_id] = exc
                    continue
                if events:
                    out[workflow_id] = events
            return out

    async def delete(self, workflow_id: str) -> bool:
        """Durably remove the workflow's log; False if it had none. The id is then free."""
        if self._state != "open" or self.read_only or self._batches.closing:
            raise StoreError(f"{self.url}: cannot delete: the store is {self._describe_state()}")
        await self.flush()
        if workflow_id not in self._last_seq and workflow_id not in self._corrupt:
            return False
        if self._broken is not None:
            raise self._broken
        self._last_seq.pop(workflow_id, None)
        self._corrupt.pop(workflow_id, None)
        self._warm.pop(workflow_id, None)
        self._enqueue(workflow_id, None)
        await self.flush()
        return True

    async def wait_for_events(self, workflow_id: str, after: int, poll_interval: float = 0.05) -> None:
        """Return once the workflow has an event with ``seq > after``; polls the log's
        size, so a follower re-reads the log only when it grew."""
        paths = (self._log_path(workflow_id), self._journal_path)
        seen: object = None
        for polls in itertools.count():
            stamp = await anyio.to_thread.run_sync(stat_stamps, paths)
            # Also re-read now and then: a writer's death can change a reader's view
            # (the journal overlay) without changing any file.
            if stamp != seen or polls % 20 == 0:
                seen = stamp
                if await self.read(workflow_id, after):
                    return
            await anyio.sleep(poll_interval)

    async def owner_alive(self, owner: str | None) -> bool:
        """Whether engine ``owner`` writes this store now: the writer's own id, or for a
        reader the id that the live writer left in the LOCK file."""
        if not self.read_only:
            return await super().owner_alive(owner)
        if owner is None:
            return False
        alive, holder = await anyio.to_thread.run_sync(live_owner, self._lock_path)
        return alive and holder == owner

    async def check(self, workflow_id: str | None = None) -> list[tuple[str, int, str]]:
        """Verify framing, checksums, decoding and seq continuity (1, 2, 3, ...) of one or
        every workflow log; one ``(workflow_id, byte_position, what)`` per problem.

        A torn last record is not a problem (a write cut short: see ``notes``); a damaged
        last record that was written whole is, unless a dead writer's journal restores it.
        Works read-only.
        """
        problems, _ = await anyio.to_thread.run_sync(self._check_sync, workflow_id)
        return problems

    async def notes(self, workflow_id: str | None = None) -> list[tuple[str, int, str]]:
        """What a writer opening the store cleans up without losing an acknowledged event,
        one ``(workflow_id, byte_position, what)`` each: a torn last record (cut), a damaged
        last record that the journal restores, a log that holds no event (removed)."""
        _, notes = await anyio.to_thread.run_sync(self._check_sync, workflow_id)
        return notes

    def _check_sync(
        self, workflow_id: str | None
    ) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
        return check(self._workflows_dir, workflow_id, self._journal_overlay() or {})
