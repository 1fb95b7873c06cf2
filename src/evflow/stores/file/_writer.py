"""The file store's write side: the writer thread and its group commit, the logs'
append descriptors, checkpoints.

Write path (strict durability, the default): ``append_nowait`` checks sequence numbers
against the last seq of every workflow (loaded at ``open``), encodes each event once and
queues it. The store's writer thread (from ``open`` to ``close``) takes everything queued
as one batch as soon as somebody ``flush``es it, or LAZY_COMMIT_SECONDS after it started
filling, writes the batch to the journal with one ``write``, fsyncs the journal once,
then appends each workflow's records to its log (one ``write`` each, no fsync) and wakes
the batch's ``flush`` waiters with one call into the event loop. A checkpoint (journal
over ``checkpoint_bytes``, and a clean ``close``) makes the logs written since the last
one durable (fsync each, or one syncfs(2) when there are many) and empties the journal.

Relaxed durability skips the journal: batches go straight to the logs, nothing is fsynced
until ``close``. A process crash loses nothing acknowledged (the data is in the page
cache); an OS crash may lose the latest events of any workflow, never anything before
them. (An unsynced journal would add nothing, and after an OS crash it could even lag
behind the logs.)

A failed batch write (disk full, EIO) is raised by ``flush`` in each of its waiters as a
``StoreError`` with the cause, and the store then refuses every further write: after a
failed write or fsync the page cache cannot be trusted, so the honest way on is to reopen
the store, which recovers from the journal.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict

from ..._codec import FRAME_HEADER, frame
from ..._errors import StoreError
from ..._signal import Notify
from .._group_commit import LAZY_COMMIT_SECONDS, Batch, GroupCommit
from . import _disk
from ._journal import encode_batch, reserve
from ._layout import JOURNAL_NAME, LOCK_NAME, WORKFLOWS_DIR, log_file_name, log_header, seq_of
from ._lock import file_id

__all__ = ["LAZY_COMMIT_SECONDS", "Writer"]


# What the writer thread is doing, so that the event loop wakes it only when it sleeps.
_IDLE = 0  # asleep until an append or a flush: nothing was committed for a while
_LAZY = 1  # asleep until a flush or the next deadline, when it commits whatever is queued
_BUSY = 2  # writing a batch (or about to)
#: How long after its last commit the writer thread stops polling (see _writer_main).
_IDLE_AFTER_SECONDS = 1.0


class _Batch(Batch):
    """Appends queued between two commits; its waiters are woken together.

    ``items``, ``n_events`` and ``waited`` are guarded by the store's mutex: the event
    loop fills the batch, the writer thread takes it. ``failure`` is set by the writer
    thread before it hands ``finish`` to the event loop, which alone wakes the waiters.
    """

    __slots__ = ("items", "n_events", "waited")

    def __init__(self) -> None:
        super().__init__()
        # (workflow id, encoded events) or (workflow id, None) for a deletion.
        self.items: list[tuple[str, list[bytes] | None]] = []
        self.n_events = 0
        #: Somebody flushes it: the writer thread commits it now (not after
        #: LAZY_COMMIT_SECONDS) and wakes the event loop once it is written.
        self.waited = False


class Writer:
    """The write side of a ``FileStore`` (its base class): the state shared by the event
    loop and the writer thread (under ``_mutex``), and what the thread owns (the
    descriptors, the journal's size, the logs to make durable at the next checkpoint)."""

    def __init__(self, path: str, *, strict: bool, checkpoint_bytes: int) -> None:
        self.path = path
        self.url = "file://" + path
        self._strict = strict
        self._checkpoint_bytes = checkpoint_bytes
        self._workflows_dir = os.path.join(path, WORKFLOWS_DIR)
        self._journal_path = os.path.join(path, JOURNAL_NAME)
        self._lock_path = os.path.join(path, LOCK_NAME)
        self._broken: StoreError | None = None
        # The write path, shared by the event loop and the writer thread (see _writer_main):
        # the batch being filled and the one being written, guarded by _mutex.
        self._mutex = threading.Lock()
        # Wakes the writer thread: released (once, while _signalled is False) by whoever
        # gives it work, acquired by the thread to sleep. A bare lock, not a Condition:
        # the event loop pays a C call per wake-up instead of Python-level bookkeeping.
        self._signal = threading.Lock()
        self._signal.acquire()
        self._signalled = False
        self._batches: GroupCommit[_Batch] = GroupCommit()
        self._writer_state = _BUSY
        self._stopping = False
        self._writer: threading.Thread | None = None
        self._notify: Notify | None = None
        # Owned by the writer thread (and by open/close while it does not run).
        self._lock_fd = -1
        #: (st_dev, st_ino) of the LOCK file we hold, checked before each batch (see
        #: _check_still_ours).
        self._lock_id: tuple[int, int] | None = None
        self._journal_fd = -1
        self._journal_size = 0
        #: Bytes of the journal file (zeros past ``_journal_size``), see _journal.reserve.
        self._journal_alloc = 0
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._max_fds = _disk.max_open_logs()
        self._dirty: set[str] = set()
        self._dir_dirty = False
        self._stats = {"batches": 0, "events": 0, "fsyncs": 0, "checkpoints": 0}

    def _log_path(self, workflow_id: str) -> str:
        return os.path.join(self._workflows_dir, log_file_name(workflow_id))

    def _start_writer(self, notify: Notify) -> None:
        self._notify = notify
        self._writer = threading.Thread(
            target=self._writer_main, name=f"evflow writer {self.path}", daemon=True
        )
        self._writer.start()

    def _enqueue(self, workflow_id: str, payloads: list[bytes] | None) -> None:
        with self._mutex:
            batch = self._batches.filling
            if batch is None:
                batch = self._batches.filling = _Batch()
            batch.items.append((workflow_id, payloads))
            if payloads is not None:
                batch.n_events += len(payloads)
            if self._writer_state == _IDLE:
                self._signal_writer()

    async def flush(self, workflow_id: str | None = None) -> None:
        """Return once everything queued before the call is durable.

        Raises ``StoreError`` (the cause chained) when writing the batch failed, whatever
        ``workflow_id`` says: a write error here concerns the whole store, which then
        refuses further appends (reopen it to recover from the journal).
        """
        with self._mutex:
            target = self._batches.flush_target()
            if target is not None and not target.waited:
                target.waited = True
                if self._writer_state != _BUSY:  # the batch being written needs no wake-up
                    self._signal_writer()
        if target is not None:
            await target.wait()
            if target.failure is not None:
                raise target.failure
        if self._broken is not None:
            raise self._broken

    def _signal_writer(self) -> None:
        """Wake the writer thread (with ``_mutex`` held); at most one wake-up is pending."""
        if not self._signalled:
            self._signalled = True
            self._signal.release()

    def _stop_writer(self) -> None:
        with self._mutex:
            self._stopping = True
            self._signal_writer()
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _writer_main(self) -> None:
        """The writer thread: take each batch, write it, wake its waiters; until close.

        A batch is taken as soon as somebody flushes it; events nobody flushes yet (a
        StepStarted) wait up to LAZY_COMMIT_SECONDS for company, so that a step costs one
        fsync, not two. Until _IDLE_AFTER_SECONDS after its last commit the thread wakes
        every LAZY_COMMIT_SECONDS to look for such events by itself, so that only a flush
        wakes it from the event loop (one thread wake-up per step, not two); then it sleeps
        until an append. The event loop is woken once per batch that somebody awaits.
        """
        notify = self._notify
        assert notify is not None
        mutex = self._mutex
        batches = self._batches
        deadline = 0.0
        last_commit = 0.0
        while True:
            with mutex:
                batch = batches.filling
                now = time.monotonic()
                state = self._writer_state
                if batch is not None and (
                    batch.waited or self._stopping or (state == _LAZY and now >= deadline)
                ):
                    state = _BUSY
                    batches.take()
                    last_commit = now
                elif batch is None and self._stopping:
                    break  # everything is written
                elif batch is None and (state == _IDLE or now - last_commit >= _IDLE_AFTER_SECONDS):
                    state = _IDLE
                    timeout = -1.0
                else:
                    # Lazy: commit what nobody flushes at the next deadline. While the store
                    # is busy the thread keeps polling this way, so appends never wake it.
                    if state != _LAZY or now >= deadline:
                        deadline = now + LAZY_COMMIT_SECONDS
                    state = _LAZY
                    timeout = deadline - now
                self._writer_state = state
            if self._writer_state != _BUSY:
                if self._signal.acquire(timeout=timeout):
                    with mutex:
                        self._signalled = False
                continue
            assert batch is not None
            self._commit(batch)
            if self._strict and self._journal_size >= self._checkpoint_bytes and self._broken is None:
                self._checkpoint_or_break(False)
            with mutex:
                batches.written()
                waited = batch.waited
            if waited:
                with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody waits
                    notify(batch.finish)
        if self._broken is None:
            self._checkpoint_or_break(True)

    def _commit(self, batch: _Batch) -> None:
        try:
            if self._broken is not None:
                raise self._broken
            self._check_still_ours()
            self._write_batch(batch.items)
        except StoreError as exc:
            batch.failure = exc
        except Exception as exc:
            size = sum(len(p) + FRAME_HEADER.size for _, ps in batch.items for p in ps or ())
            what = f"writing a batch of {batch.n_events} event(s) ({size} bytes)"
            batch.failure = self._broken = _disk.write_error(self.url, what, exc, self.path)

    def _check_still_ours(self) -> None:
        """Refuse to write when the LOCK file at the store's path is no longer the one we
        hold the lock on (the directory or the file was deleted, moved or replaced):
        another writer can then lock a new store at the same path, and writing there by
        name would interleave with it. One stat call per batch."""
        try:
            now: tuple[int, int] | None = file_id(os.stat(self._lock_path))
        except FileNotFoundError:
            now = None
        if now != self._lock_id:
            self._broken = StoreError(
                f"{self.url}: the store directory or its {LOCK_NAME} file was deleted or replaced "
                "while this engine held the store (another engine may be writing the store now "
                "at that path); this engine refuses further writes: close it, and open the store "
                "again if it is to write there"
            )
            raise self._broken

    def _write_batch(self, items: list[tuple[str, list[bytes] | None]]) -> None:
        """One batch, in the commit thread: journal (one write, one fsync), then the logs."""
        if self._strict:
            data = encode_batch(items)
            self._journal_alloc, grows = reserve(
                self._journal_fd, self._journal_size, self._journal_alloc, len(data)
            )
            _disk.pwrite_all(self._journal_fd, data, self._journal_size)
            self._journal_size += len(data)
            # A batch past the preallocated zeros changes the file's size, which only a
            # full fsync is sure to make durable.
            (_disk.fsync if grows else _disk.fdatasync)(self._journal_fd)
            self._stats["fsyncs"] += 1
        # Group each workflow's records into one write; a deletion drops what came before.
        pending: dict[str, list[bytes]] = {}
        firsts: dict[str, bytes] = {}  # the first event each workflow gets in this batch
        n_events = 0
        for workflow_id, payloads in items:
            if payloads is None:
                pending.pop(workflow_id, None)
                firsts.pop(workflow_id, None)
                self._delete_log(workflow_id)
            else:
                frames = pending.get(workflow_id)
                if frames is None:
                    frames = pending[workflow_id] = []
                    firsts[workflow_id] = payloads[0]
                frames.extend([frame(p) for p in payloads])
                n_events += len(payloads)
        for workflow_id, frames in pending.items():
            self._append_to_log(workflow_id, frames, firsts[workflow_id])
        self._stats["batches"] += 1
        self._stats["events"] += n_events

    def _append_to_log(self, workflow_id: str, frames: list[bytes], first: bytes | None = None) -> None:
        """Append framed records to a log (writer thread); ``first``, the first record's
        payload when known, lets a new workflow's log be created without a failed open."""
        fd = self._fds.get(workflow_id)
        if fd is not None:
            self._fds.move_to_end(workflow_id)
            _disk.write_all(fd, b"".join(frames))
        else:
            path = self._log_path(workflow_id)
            fd = -1
            if first is not None and seq_of(first) == 1:  # most likely no log yet
                with contextlib.suppress(FileExistsError):
                    fd = _disk.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                    data = log_header(workflow_id) + b"".join(frames)
                    self._dir_dirty = True
            if fd < 0:
                try:
                    fd = _disk.open(path, os.O_WRONLY | os.O_APPEND)
                    data = b"".join(frames)
                except FileNotFoundError:
                    fd = _disk.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                    data = log_header(workflow_id) + b"".join(frames)
                    self._dir_dirty = True
            self._fds[workflow_id] = fd
            if len(self._fds) > self._max_fds:
                _disk.close(self._fds.popitem(last=False)[1])  # a checkpoint fsyncs it by path
            _disk.write_all(fd, data)
        self._dirty.add(workflow_id)

    def _delete_log(self, workflow_id: str) -> None:
        fd = self._fds.pop(workflow_id, None)
        if fd is not None:
            _disk.close(fd)
        self._dirty.discard(workflow_id)
        if _disk.unlink(self._log_path(workflow_id)):
            self._dir_dirty = True

    def _sync_dirty(self) -> int:
        """Make the logs written since the last checkpoint durable; returns the syscalls."""
        if len(self._dirty) > _disk.SYNCFS_THRESHOLD and _disk.syncfs_dir(self._workflows_dir):
            return 1
        for workflow_id in self._dirty:
            _disk.fsync_path(self._log_path(workflow_id))
        if self._dir_dirty:
            _disk.fsync_dir(self._workflows_dir)
        return len(self._dirty) + self._dir_dirty

    def _checkpoint_or_break(self, final: bool) -> None:
        try:
            self._checkpoint(final)
        except OSError as exc:
            self._broken = _disk.write_error(self.url, "checkpointing the journal", exc, self.path)

    def _checkpoint(self, final: bool) -> None:
        """Make the logs durable on their own, then empty the journal (commit thread)."""
        if self._strict or final:
            self._stats["fsyncs"] += self._sync_dirty()
            self._dirty.clear()
            self._dir_dirty = False
        if self._journal_size or self._journal_alloc or final:
            _disk.ftruncate(self._journal_fd, 0)
            _disk.fsync(self._journal_fd)
            self._journal_size = self._journal_alloc = 0
        if self._strict and not final:
            self._journal_alloc, _ = reserve(self._journal_fd, 0, 0, 1)
        self._stats["checkpoints"] += 1

    def _release(self) -> None:
        for fd in self._fds.values():
            _disk.close(fd)
        self._fds.clear()
        if self._journal_fd >= 0:
            _disk.close(self._journal_fd)
            self._journal_fd = -1
        if self._lock_fd >= 0:
            try:
                _disk.ftruncate(self._lock_fd, 0)
            finally:
                _disk.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
