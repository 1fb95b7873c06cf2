"""The embedded file store (the default): one append-only log per workflow, group-committed
through a write-ahead journal.

Layout of the store directory::

    evflow-store.json      {"format": 1}; a higher format is refused
    LOCK                   flock()ed by the one writer for its whole life; holds its pid
                           and engine id (one a line), for messages and owner_alive()
    journal                write-ahead journal: framed ``_JournalEntry`` records
    workflows/<name>.log   b"EVFLOG1\\n", a framed record holding the workflow id, then one
                           framed record per event (``encode_event``)

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

Recovery when a writer opens: a torn tail of the journal (any damaged last entry) and of
every log (a write cut short, see _damaged_tail) is cut, the journal is redone into the
logs (idempotent: events are matched by seq; a deletion in the journal rebuilds the log
from the entries after it) and a checkpoint follows. A log whose last record was written
whole but is damaged gets it back from the journal when the journal holds it; else it
may have been acknowledged, so it is damage like any other. A damaged record is never
cut or skipped: that workflow raises ``CorruptLogError`` while every other stays usable
(its journaled events, if any, are not redone). A record counts as the last one when no
intact record follows it. A log that holds no event (0 bytes, a torn header or first
event: a crash right after creating it) is removed, and readers do not list it. The
writer refuses to open, with a ``StoreError`` saying what to do, in two cases that only
damage or outside changes produce: a journal damaged before its end (the entries before
the damage are redone first) and a log that ends before the journal continues it (a seq
gap). Moving the journal aside then opens the store without it.

Readers (``read_only=True``) take no lock and write nothing: they read the logs while a
writer appends (a torn last record is data still being written) and, when no writer is
alive, overlay what the journal holds beyond the logs (after a crash, before recovery).

The lock is flock(2), so it is POSIX-only, dies with the process, and is shared with a
child created by a bare ``fork()`` (use spawn, or exec, for processes that outlive the
writer).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NamedTuple, TypeAlias

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import TaskStatus

from .._codec import FRAME_HEADER, decode_event, encode_event, frame
from .._errors import CorruptLogError, StoreError, StoreLockedError
from .._events import AnyEvent, Event
from .._signal import Notify, Signal, loop_notifier, new_signal
from ._base import Store, check_sequence

if sys.platform != "win32":  # the writer lock is flock(2); FileStore.open says so on Windows
    import fcntl
    import resource

__all__ = ["FileStore", "FileStoreStatistics"]

STORE_FORMAT = 1
MARKER_NAME = "evflow-store.json"
LOCK_NAME = "LOCK"
JOURNAL_NAME = "journal"
WORKFLOWS_DIR = "workflows"
LOG_SUFFIX = ".log"
LOG_MAGIC = b"EVFLOG1\n"
MAX_NAME_CHARS = 200
DEFAULT_CHECKPOINT_BYTES = 32 * 1024 * 1024
#: How far ahead the journal is allocated with zeros (see FileStore._reserve_journal).
JOURNAL_PREALLOC_BYTES = 4 * 1024 * 1024
#: How long events that nobody flushes (a StepStarted) may wait for company before their
#: batch is committed anyway.
LAZY_COMMIT_SECONDS = 0.005
_WARM_LIMIT = 256 * 1024 * 1024  # log bytes kept from the open scan for the first read_all

# Every encoded event is a msgpack map whose first key is the union's tag field "type"; a
# journal entry's first key is its tag field "journal". Searching for these keys finds
# the intact records that may follow a damaged one (see _intact_record_after).
_EVENT_KEY = b"\xa4type"
_JOURNAL_KEY = b"\xa7journal"
_MAP_HEADER_SIZES = (1, 3)  # fixmap (up to 15 fields), map16

_fsync_data = getattr(os, "fdatasync", os.fsync)


class _JournalEntry(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="journal", tag="v1"):
    """One journal record: encoded events appended to a workflow, or its deletion."""

    workflow_id: str
    events: list[bytes] = []
    deleted: bool = False


class _SeqOnly(msgspec.Struct):
    """Reads just the seq of an encoded event (other fields are skipped, not decoded)."""

    seq: int


_journal_encoder = msgspec.msgpack.Encoder()
_journal_decoder = msgspec.msgpack.Decoder(_JournalEntry)
_seq_decoder = msgspec.msgpack.Decoder(_SeqOnly)


def _seq_of(payload: bytes | memoryview) -> int:
    return _seq_decoder.decode(payload).seq


# -- workflow id <-> file name ---------------------------------------------------------------

_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.")
_BYTE_TEXT = [chr(b) if b in _SAFE_BYTES else f"%{b:02x}" for b in range(256)]


def log_file_name(workflow_id: str) -> str:
    """The file name (under ``workflows/``) of a workflow's log; a pure, injective function.

    ``[a-z0-9_-]`` and ``.`` (except first) stay as they are; every other byte of the UTF-8
    id is ``%xx`` (lower-case hex, so ids differing only in case never collide on a
    case-insensitive file system, and no ``/``, ``\\`` or NUL can appear). A name over 200
    characters becomes ``~`` + the id's sha256; ``~`` never starts an escaped name.
    """
    raw = workflow_id.encode("utf-8", "surrogatepass")
    name = "".join([_BYTE_TEXT[b] for b in raw])
    if raw[:1] == b".":
        name = "%2e" + name[1:]
    if len(name) > MAX_NAME_CHARS:
        name = "~" + hashlib.sha256(raw).hexdigest()
    return name + LOG_SUFFIX


_PLAIN_STEM = re.compile(r"[a-z0-9_-][a-z0-9_.-]*")
_ESCAPED_STEM = re.compile(r"(?:[a-z0-9_.-]|%[0-9a-f]{2})+")


def _workflow_id_from_name(name: str) -> str | None:
    """Invert ``log_file_name``; None for a hashed name (the id is in the log's header)
    and for any name this store would not have written."""
    if not name.endswith(LOG_SUFFIX):
        return None
    stem = name[: -len(LOG_SUFFIX)]
    if len(stem) > MAX_NAME_CHARS:
        return None
    if _PLAIN_STEM.fullmatch(stem):  # the common case, and canonical as it is
        return stem
    if not _ESCAPED_STEM.fullmatch(stem):
        return None
    try:
        workflow_id = urllib.parse.unquote_to_bytes(stem).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return workflow_id if log_file_name(workflow_id) == name else None


# -- record scanning -------------------------------------------------------------------------


def _intact_record_after(buf: bytes, start: int, key: bytes) -> bool:
    """Whether an intact record (checksum ok) of the kind marked by ``key`` starts after
    ``start``. Tells a torn last record (nothing after it) from damage in the middle,
    e.g. a corrupted length field that makes a record seem to run past the end."""
    end = len(buf)
    hit = buf.find(key, start)
    while hit != -1:
        for header_size in _MAP_HEADER_SIZES:
            pos = hit - header_size - FRAME_HEADER.size
            if pos >= start:
                length, crc = FRAME_HEADER.unpack_from(buf, pos)
                body = pos + FRAME_HEADER.size
                if 0 < length <= end - body and zlib.crc32(memoryview(buf)[body : body + length]) == crc:
                    return True
        hit = buf.find(key, hit + 1)
    return False


#: (byte position, payload) of a record; payloads are views into the file's buffer.
_Record: TypeAlias = tuple[int, bytes | memoryview]


class _Scan(NamedTuple):
    """The intact records of a buffer, as positions (plain ints: cheap to keep, no GC)."""

    buf: bytes
    starts: list[int]  # where each intact record's frame starts
    ends: list[int]  # where it ends; its payload is buf[start + FRAME_HEADER.size : end]
    good_end: int  # where the intact records end; a torn tail starts here
    damage: tuple[int, str] | None  # a damaged record that is not the last one

    def payload(self, index: int) -> memoryview:
        return memoryview(self.buf)[self.starts[index] + FRAME_HEADER.size : self.ends[index]]

    def records(self) -> list[_Record]:
        view = memoryview(self.buf)
        skip = FRAME_HEADER.size
        return [(start, view[start + skip : end]) for start, end in zip(self.starts, self.ends, strict=True)]


def _scan_frames(buf: bytes, start: int, key: bytes) -> _Scan:
    """Split ``buf`` into framed records (the format of ``_codec.frame``).

    Like ``_codec.iter_frames`` but without a generator step and a copy per record:
    opening a store scans every log, so this loop is the cold-start cost.
    """
    starts: list[int] = []
    ends: list[int] = []
    view = memoryview(buf)
    end = len(buf)
    header = FRAME_HEADER.size
    unpack = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    pos = start
    while pos < end:
        problem = "torn"
        if end - pos >= header:
            length, crc = unpack(buf, pos)
            stop = pos + header + length
            if stop <= end:
                if length and crc32(view[pos + header : stop]) == crc:
                    starts.append(pos)
                    ends.append(stop)
                    pos = stop
                    continue
                # Empty: never written by us (e.g. a zero-filled tail after a crash).
                problem = "checksum mismatch" if length else "empty record"
        if _intact_record_after(buf, pos + 1, key):
            return _Scan(buf, starts, ends, pos, (pos, problem))
        break
    return _Scan(buf, starts, ends, pos, None)


class _LogScan(NamedTuple):
    """A scanned workflow log: the id from its header record, then its event records."""

    workflow_id: str | None  # None when the header is torn
    events: _Scan  # the event records (the header record left out)
    #: A damaged last record that was written whole, so not a torn write (see
    #: _damaged_tail): it may hold an acknowledged event and is never cut unless the
    #: journal restores it.
    tail_damage: tuple[int, str] | None = None

    @property
    def good_end(self) -> int:
        return self.events.good_end

    @property
    def damage(self) -> tuple[int, str] | None:
        return self.events.damage


def _scan_log(buf: bytes) -> _LogScan:
    """Parse a workflow log: magic, id record, event records (not decoded)."""
    magic = len(LOG_MAGIC)
    if len(buf) < magic or buf[:magic] != LOG_MAGIC:
        if LOG_MAGIC.startswith(buf):
            return _LogScan(None, _Scan(buf, [], [], 0, None))  # torn creation
        return _LogScan(None, _Scan(buf, [], [], 0, (0, "not an evflow workflow log (bad magic)")))
    scan = _scan_frames(buf, magic, _EVENT_KEY)
    if not scan.starts:
        damage = scan.damage and (scan.damage[0], f"damaged header: {scan.damage[1]}")
        return _LogScan(None, _Scan(buf, [], [], magic, damage))
    try:
        workflow_id = bytes(scan.payload(0)).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        damage = (scan.starts[0], "damaged header: workflow id is not UTF-8")
        return _LogScan(None, _Scan(buf, [], [], magic, damage))
    events = scan._replace(starts=scan.starts[1:], ends=scan.ends[1:])
    tail_damage = None
    if scan.damage is None and scan.good_end < len(buf):
        what = _damaged_tail(buf, scan.good_end)
        tail_damage = None if what is None else (scan.good_end, what)
    return _LogScan(workflow_id, events, tail_damage)


#: What an OS crash loses of a file's data comes in whole sectors (or pages): the zeros
#: it leaves at the end of a log start at a multiple of this.
_SECTOR = 512


def _damaged_tail(buf: bytes, pos: int) -> str | None:
    """Why the last record of a log (at ``pos``, nothing intact after it) is damage rather
    than a torn write; None for a torn write, which holds nothing durable and is cut.

    A write that did not complete leaves a frame that runs past the end of the file (the
    process died while writing), or zeros from a sector boundary to the end (the file grew
    but its data never reached the disk). A frame that is complete and fails its checksum
    anyway was written whole and changed since (bit rot, an outside change), and so is one
    that only seems to run past the end because its length field was hit: the bytes up to
    the end still carry its checksum.
    """
    end = len(buf)
    if end - pos < FRAME_HEADER.size:
        return None
    length, crc = FRAME_HEADER.unpack_from(buf, pos)
    body = pos + FRAME_HEADER.size
    if body + length > end:
        if length and zlib.crc32(memoryview(buf)[body:]) == crc:
            return "damaged length field in the last record (its data is complete)"
        return None
    zeros_from = pos + len(bytes(memoryview(buf)[pos:]).rstrip(b"\0"))
    if zeros_from < end and (zeros_from % _SECTOR == 0 or zeros_from == pos):
        return None
    what = "checksum mismatch" if length else "empty record"
    return f"{what} in the last record, which is complete (damage, not a torn write)"


def _log_header(workflow_id: str) -> bytes:
    return LOG_MAGIC + frame(workflow_id.encode("utf-8", "surrogatepass"))


def _decode_events(workflow_id: str, records: Sequence[_Record], after: int) -> list[AnyEvent]:
    """Decode the records with seq > ``after``; raises ``CorruptLogError`` for an
    undecodable one. Seqs run 1, 2, 3, ... so the first ``after`` records are skipped
    without decoding when the record at that index confirms it."""
    start = 0
    if after > 0:
        index = min(after, len(records)) - 1
        try:
            if _seq_of(records[index][1]) == index + 1:
                start = index + 1
        except (msgspec.DecodeError, IndexError):
            start = 0
    out: list[AnyEvent] = []
    for pos, payload in records[start:]:
        try:
            event = decode_event(payload)
        except msgspec.DecodeError as exc:
            raise CorruptLogError(workflow_id, pos, f"undecodable event: {exc}") from exc
        if event.seq > after:
            out.append(event)
    return out


# -- small I/O helpers (worker threads only) -------------------------------------------------


_READ_SIZE = 1 << 16


def _read_file(path: str) -> bytes | None:
    """The whole file, None if missing. Three syscalls for a small file: a short read of
    a regular file is its end (syscalls are most of the cost of opening a big store)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        chunks = [data]
        while len(chunk := os.read(fd, max(os.fstat(fd).st_size, _READ_SIZE))) > 0:
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


# -- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileStoreStatistics:
    """Counters of a writer ``FileStore`` since ``open`` (see ``FileStore.statistics``)."""

    batches: int
    events: int
    fsyncs: int
    checkpoints: int
    queued_events: int
    journal_bytes: int


class _Batch:
    """Appends queued between two commits; its waiters are woken together.

    ``items``, ``n_events`` and ``waited`` are guarded by the store's mutex:
    the event loop fills the batch, the writer thread takes it. ``error`` is set by the
    writer thread before it hands ``finish`` to the event loop, which alone touches
    ``done`` and ``event``.
    """

    __slots__ = ("done", "error", "event", "items", "n_events", "waited")

    def __init__(self) -> None:
        # (workflow id, encoded events) or (workflow id, None) for a deletion.
        self.items: list[tuple[str, list[bytes] | None]] = []
        self.n_events = 0
        #: Somebody flushes it: the writer thread commits it now (not after
        #: LAZY_COMMIT_SECONDS) and wakes the event loop once it is written.
        self.waited = False
        self.done = False
        self.error: StoreError | None = None
        self.event: Signal | None = None

    async def wait(self) -> None:
        if not self.done:
            if self.event is None:
                self.event = new_signal()
            await self.event.wait()

    def finish(self) -> None:
        self.done = True
        if self.event is not None:
            self.event.set()


# What the writer thread is doing, so that the event loop wakes it only when it sleeps.
_IDLE = 0  # asleep until an append or a flush: nothing was committed for a while
_LAZY = 1  # asleep until a flush or the next deadline, when it commits whatever is queued
_BUSY = 2  # writing a batch (or about to)
#: How long after its last commit the writer thread stops polling (see _writer_main).
_IDLE_AFTER_SECONDS = 1.0


@dataclass(slots=True)
class _Overlay:
    """What a reader must add to a workflow's log from a dead writer's journal."""

    reset: bool = False  # the journal deletes the workflow: ignore its log file
    events: list[bytes] = field(default_factory=list)


class FileStore(Store):
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
        self.path = os.path.abspath(text)
        self.url = "file://" + self.path
        self.durability = durability
        self.read_only = read_only
        self._strict = durability == "strict"
        self._checkpoint_bytes = checkpoint_bytes
        self._workflows_dir = os.path.join(self.path, WORKFLOWS_DIR)
        self._journal_path = os.path.join(self.path, JOURNAL_NAME)
        self._lock_path = os.path.join(self.path, LOCK_NAME)
        self._state: Literal["new", "open", "closed"] = "new"
        # Writer state owned by the event loop: what append_nowait checks and queues.
        self._last_seq: dict[str, int] = {}
        self._corrupt: dict[str, CorruptLogError] = {}
        # Logs read by the writer's recovery scan, kept for the first read_all (the engine's
        # recovery right after open) so that a cold start reads each log once.
        self._warm: dict[str, _LogScan] = {}
        self._broken: StoreError | None = None
        self._running = False
        self._closing = False
        self._run_stop: anyio.Event | None = None
        self._closed: anyio.Event | None = None
        # The write path, shared by the event loop and the writer thread (see _writer_main):
        # the batch being filled and the one being written, guarded by _mutex.
        self._mutex = threading.Lock()
        # Wakes the writer thread: released (once, while _signalled is False) by whoever
        # gives it work, acquired by the thread to sleep. A bare lock, not a Condition:
        # the event loop pays a C call per wake-up instead of Python-level bookkeeping.
        self._signal = threading.Lock()
        self._signal.acquire()
        self._signalled = False
        self._current = _Batch()
        self._inflight: _Batch | None = None
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
        #: Bytes of the journal file (zeros past ``_journal_size``), see _reserve_journal.
        self._journal_alloc = 0
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._max_fds = _max_open_logs()
        self._dirty: set[str] = set()
        self._dir_dirty = False
        self._stats = {"batches": 0, "events": 0, "fsyncs": 0, "checkpoints": 0}

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
        return FileStoreStatistics(
            batches=self._stats["batches"],
            events=self._stats["events"],
            fsyncs=self._stats["fsyncs"],
            checkpoints=self._stats["checkpoints"],
            queued_events=self._current.n_events,
            journal_bytes=self._journal_size,
        )

    def _log_path(self, workflow_id: str) -> str:
        return os.path.join(self._workflows_dir, log_file_name(workflow_id))

    # -- open / close ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store. A writer takes the lock (``StoreLockedError`` naming the holder's
        pid if another live writer has it), creates the layout and recovers from a crash."""
        if self._state != "new":
            raise StoreError(f"{self.url}: a FileStore is opened once (it is {self._state})")
        if sys.platform == "win32":
            raise StoreError("the embedded file store needs a POSIX system (flock); use PostgreSQL")
        if self.read_only:
            await anyio.to_thread.run_sync(self._check_marker, False)
        else:
            await anyio.to_thread.run_sync(self._open_writer)
            self._notify = loop_notifier()
            self._writer = threading.Thread(
                target=self._writer_main, name=f"evflow writer {self.path}", daemon=True
            )
            self._writer.start()
        self._state = "open"

    def _check_marker(self, create: bool) -> None:
        path = os.path.join(self.path, MARKER_NAME)
        data = _read_file(path)
        if data is None:
            if not create:
                return
            self._refuse_foreign_directory()
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, json.dumps({"format": STORE_FORMAT}).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            return
        try:
            version = json.loads(data)["format"]
            if not isinstance(version, int):
                raise TypeError(version)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.url}: unreadable store marker {MARKER_NAME}: {exc!r}") from exc
        if version > STORE_FORMAT:
            raise StoreError(
                f"{self.url} was written in store format {version} by a newer evflow; this "
                f"version reads format {STORE_FORMAT} at most: upgrade evflow"
            )

    def _refuse_foreign_directory(self) -> None:
        if os.path.exists(os.path.join(self.path, MARKER_NAME)):
            return
        ours = {MARKER_NAME, LOCK_NAME, JOURNAL_NAME, WORKFLOWS_DIR, MARKER_NAME + ".tmp"}
        if not set(os.listdir(self.path)) <= ours:
            raise StoreError(
                f"{self.url} is not an evflow store (no {MARKER_NAME}) and is not empty; "
                "pass a new or empty directory"
            )

    def _open_writer(self) -> None:
        self._last_seq.clear()  # a failed open may be retried
        self._corrupt.clear()
        self._warm.clear()
        self._dirty.clear()
        self._dir_dirty = False
        os.makedirs(self.path, exist_ok=True)
        self._refuse_foreign_directory()  # before the LOCK file is created in it
        self._lock_fd = _acquire_lock(self._lock_path, self.path, self.owner_id)
        try:
            self._lock_id = _file_id(os.fstat(self._lock_fd))
            self._check_marker(True)
            os.makedirs(self._workflows_dir, exist_ok=True)
            # Not O_APPEND: batches are written at the journal's logical end, inside space
            # preallocated with zeros (see _reserve_journal).
            self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_CREAT, 0o644)
            _fsync_dir(self.path)  # the marker, journal and workflows/ entries themselves
            self._recover()
        except BaseException as exc:
            self._warm.clear()
            self._release()
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                raise StoreError(
                    f"{self.url}: the disk is full: opening the store (recovering from its journal) "
                    f"failed ({exc}; {_free_bytes_at(self.path)} bytes free on {self.path}); nothing "
                    "was lost: free some space and open it again"
                ) from exc
            raise

    def _release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        if self._lock_fd >= 0:
            try:
                os.ftruncate(self._lock_fd, 0)
            finally:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

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
        if self._closing:  # another task is closing it: wait for that
            with anyio.CancelScope(shield=True):
                assert self._closed is not None
                await self._closed.wait()
            return
        self._closing = True
        self._closed = anyio.Event()
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
                self._closed.set()
        if error is not None:
            raise error

    def _stop_writer(self) -> None:
        with self._mutex:
            self._stopping = True
            self._signal_writer()
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Cut torn tails, redo the journal into the logs, checkpoint (writer open)."""
        bad_tails: dict[str, tuple[int, str]] = {}
        with _gc_paused():  # the scan keeps every record for the first read_all
            files = self._recover_logs(bad_tails)
        self._recover_journal(files, bad_tails)

    def _recover_logs(self, bad_tails: dict[str, tuple[int, str]]) -> dict[str, tuple[str, int]]:
        """Scan every log, cut torn tails; fills ``bad_tails`` with the damaged last records
        (position, what) that only the journal can restore."""
        files: dict[str, tuple[str, int]] = {}  # workflow id -> (path, number of events)
        warm_bytes = 0
        for name in os.listdir(self._workflows_dir):
            if not name.endswith(LOG_SUFFIX):
                continue
            path = os.path.join(self._workflows_dir, name)
            buf = _read_file(path)
            if buf is None:
                continue
            scan = _scan_log(buf)
            workflow_id = _workflow_id_from_name(name)  # None for a hashed name
            if workflow_id is None and scan.workflow_id and log_file_name(scan.workflow_id) == name:
                workflow_id = scan.workflow_id
            if workflow_id is None:
                if scan.damage is None and not scan.events.starts and name.startswith("~"):
                    _unlink(path)  # a hashed log torn before its header was complete
                continue
            if scan.damage is not None:
                self._corrupt[workflow_id] = CorruptLogError(workflow_id, *scan.damage)
                continue
            if scan.workflow_id is None:
                _unlink(path)  # torn before its header was complete: never held an event
                self._dir_dirty = True
                continue
            if scan.workflow_id != workflow_id:
                self._corrupt[workflow_id] = CorruptLogError(
                    workflow_id, len(LOG_MAGIC), f"the log belongs to workflow {scan.workflow_id!r}"
                )
                continue
            if scan.tail_damage is not None:
                bad_tails[workflow_id] = scan.tail_damage  # cut only if the journal restores it
            elif scan.good_end < len(buf):
                _truncate(path, scan.good_end)
                self._dirty.add(workflow_id)
            last = 0
            if scan.events.starts:
                pos = scan.events.starts[-1]
                try:
                    last = _seq_of(scan.events.payload(-1))
                except msgspec.DecodeError as exc:
                    self._corrupt[workflow_id] = CorruptLogError(
                        workflow_id, pos, f"undecodable event: {exc}"
                    )
                    continue
            self._last_seq[workflow_id] = last
            files[workflow_id] = (path, len(scan.events.starts))
            if warm_bytes < _WARM_LIMIT and scan.tail_damage is None:
                self._warm[workflow_id] = scan
                warm_bytes += len(buf)
        return files

    def _recover_journal(
        self, files: dict[str, tuple[str, int]], bad_tails: dict[str, tuple[int, str]]
    ) -> None:
        journal = _read_file(self._journal_path) or b""
        jscan = _scan_frames(journal, 0, _JOURNAL_KEY)
        problem: str | None = None
        if jscan.damage is not None:
            pos, what = jscan.damage
            problem = (
                f"{self.url}: the journal is damaged at byte {pos} ({what}), before its end; its "
                f"entries up to there were redone. Move {self._journal_path!r} aside to open the "
                "store without the rest (their events are lost)"
            )
        elif jscan.good_end < len(journal):
            os.ftruncate(self._journal_fd, jscan.good_end)  # torn tail: never acknowledged
        entries: list[_JournalEntry] = []
        for pos, payload in jscan.records():
            try:
                entries.append(_journal_decoder.decode(payload))
            except msgspec.DecodeError as exc:
                problem = f"{self.url}: undecodable journal entry at byte {pos}: {exc}"
                break
        try:
            self._redo(entries, files, bad_tails)
        except StoreError as exc:
            problem = str(exc)
        if problem is not None:
            self._sync_dirty()
            raise StoreError(problem)
        for workflow_id, (path, n_events) in files.items():
            if n_events == 0 and self._last_seq.get(workflow_id) == 0:
                _unlink(path)  # created but no event survived: as if never created
                del self._last_seq[workflow_id]
                self._warm.pop(workflow_id, None)
                self._dir_dirty = True
        self._checkpoint(final=True)

    def _redo(
        self,
        entries: list[_JournalEntry],
        files: dict[str, tuple[str, int]],
        bad_tails: dict[str, tuple[int, str]],
    ) -> None:
        # A deletion in the journal makes every earlier entry of that workflow moot, and
        # every event of its new incarnation is in the journal after it: so delete the log
        # and rebuild it from there. Without a deletion, the log ends at or after the seq
        # before the workflow's first journal entry (a checkpoint fsynced it).
        # A log whose last record is damaged (bad_tails) gets it back from the journal when
        # the journal holds the seq after the last intact record; it is then cut there and
        # the journal's copy written instead. Otherwise the record was checkpointed (it was
        # acknowledged) and only the damage can be reported.
        last_deletion = {e.workflow_id: i for i, e in enumerate(entries) if e.deleted}
        pending: dict[str, list[bytes]] = {}
        for index, entry in enumerate(entries):
            workflow_id = entry.workflow_id
            if index < last_deletion.get(workflow_id, -1):
                continue
            if entry.deleted:
                bad_tails.pop(workflow_id, None)
                self._last_seq.pop(workflow_id, None)
                self._corrupt.pop(workflow_id, None)
                self._warm.pop(workflow_id, None)
                pending.pop(workflow_id, None)
                files.pop(workflow_id, None)
                self._delete_log(workflow_id)
                continue
            if workflow_id in self._corrupt:
                continue  # its log is damaged mid-way; nothing can be appended to it
            last = self._last_seq.get(workflow_id, 0)
            for payload in entry.events:
                try:
                    seq = _seq_of(payload)
                except msgspec.DecodeError as exc:
                    self._flush_redo(pending)
                    raise StoreError(
                        f"{self.url}: an undecodable event for workflow {workflow_id!r} in the journal "
                        f"({exc}); move {self._journal_path!r} aside to open the store without it"
                    ) from exc
                if seq <= last:
                    continue
                if workflow_id in bad_tails:
                    if seq != last + 1:  # the damaged record is not in the journal
                        break
                    pos, _ = bad_tails.pop(workflow_id)
                    _truncate(self._log_path(workflow_id), pos)
                if seq != last + 1:
                    self._flush_redo(pending)
                    raise StoreError(
                        f"{self.url}: workflow {workflow_id!r}: its log ends at seq {last} but the "
                        f"journal continues at seq {seq}; the log was changed outside evflow. Restore "
                        f"it, or move {self._journal_path!r} aside to open the store without the journal"
                    )
                pending.setdefault(workflow_id, []).append(frame(payload))
                last = seq
            if workflow_id not in bad_tails:
                self._last_seq[workflow_id] = last
        self._flush_redo(pending)
        for workflow_id, (pos, what) in bad_tails.items():
            self._corrupt[workflow_id] = CorruptLogError(workflow_id, pos, what)
            self._last_seq.pop(workflow_id, None)
            files.pop(workflow_id, None)

    def _flush_redo(self, pending: dict[str, list[bytes]]) -> None:
        for workflow_id, frames in pending.items():
            self._warm.pop(workflow_id, None)
            self._append_to_log(workflow_id, frames)
        pending.clear()

    def _sync_dirty(self) -> int:
        """Make the logs written since the last checkpoint durable; returns the syscalls."""
        if len(self._dirty) > _SYNCFS_THRESHOLD and _syncfs_dir(self._workflows_dir):
            return 1
        for workflow_id in self._dirty:
            _fsync_path(self._log_path(workflow_id))
        if self._dir_dirty:
            _fsync_dir(self._workflows_dir)
        return len(self._dirty) + self._dir_dirty

    # -- write path ---------------------------------------------------------------------------

    def append_nowait(self, workflow_id: str, events: Sequence[Event]) -> None:
        """Queue events (encoded here, once); ``SequenceConflictError`` if a seq does not
        follow, ``CorruptLogError`` if the workflow's log is damaged. Never blocks."""
        if self._state != "open" or self.read_only or self._closing:
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

    def _enqueue(self, workflow_id: str, payloads: list[bytes] | None) -> None:
        with self._mutex:
            batch = self._current
            batch.items.append((workflow_id, payloads))
            if payloads is not None:
                batch.n_events += len(payloads)
            if self._writer_state == _IDLE:
                self._signal_writer()

    def _signal_writer(self) -> None:
        """Wake the writer thread (with ``_mutex`` held); at most one wake-up is pending."""
        if not self._signalled:
            self._signalled = True
            self._signal.release()

    def _describe_state(self) -> str:
        if self.read_only:
            return "read-only"
        if self._closing or self._state == "closed":
            return "closed"
        return "not open" if self._state == "new" else self._state

    async def flush(self, workflow_id: str | None = None) -> None:
        """Return once everything queued before the call is durable.

        Raises ``StoreError`` (the cause chained) when writing the batch failed, whatever
        ``workflow_id`` says: a write error here concerns the whole store, which then
        refuses further appends (reopen it to recover from the journal).
        """
        with self._mutex:
            target = self._current if self._current.items else self._inflight
            if target is not None and not target.waited:
                target.waited = True
                if self._writer_state != _BUSY:  # the batch being written needs no wake-up
                    self._signal_writer()
        if target is not None:
            await target.wait()
            if target.error is not None:
                raise target.error
        if self._broken is not None:
            raise self._broken

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Wait until ``close`` or cancellation, then make what is queued durable.

        The group commit itself runs on the store's writer thread from ``open`` to
        ``close``, so ``flush`` works with or without ``run``; on its way out ``run``
        hurries the batch being filled instead of leaving it for LAZY_COMMIT_SECONDS.
        """
        if self.read_only or self._state != "open" or self._closing:
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
        deadline = 0.0
        last_commit = 0.0
        while True:
            with mutex:
                batch = self._current
                now = time.monotonic()
                state = self._writer_state
                if batch.items and (batch.waited or self._stopping or (state == _LAZY and now >= deadline)):
                    state = _BUSY
                    self._current = _Batch()
                    self._inflight = batch
                    last_commit = now
                elif not batch.items and self._stopping:
                    break  # everything is written
                elif not batch.items and (state == _IDLE or now - last_commit >= _IDLE_AFTER_SECONDS):
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
            self._commit(batch)
            if self._strict and self._journal_size >= self._checkpoint_bytes and self._broken is None:
                self._checkpoint_or_break(False)
            with mutex:
                self._inflight = None
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
            batch.error = exc
        except Exception as exc:
            size = sum(len(p) + FRAME_HEADER.size for _, ps in batch.items for p in ps or ())
            what = f"writing a batch of {batch.n_events} event(s) ({size} bytes)"
            batch.error = self._broken = _write_error(self.url, what, exc, self.path)

    def _check_still_ours(self) -> None:
        """Refuse to write when the LOCK file at the store's path is no longer the one we
        hold the lock on (the directory or the file was deleted, moved or replaced):
        another writer can then lock a new store at the same path, and writing there by
        name would interleave with it. One stat call per batch."""
        try:
            now: tuple[int, int] | None = _file_id(os.stat(self._lock_path))
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
            data = b"".join(
                [
                    frame(
                        _journal_encoder.encode(
                            _JournalEntry(workflow_id=wid, events=evs)
                            if evs is not None
                            else _JournalEntry(workflow_id=wid, deleted=True)
                        )
                    )
                    for wid, evs in items
                ]
            )
            self._reserve_journal(len(data))
            _pwrite_all(self._journal_fd, data, self._journal_size)
            self._journal_size += len(data)
            _fsync_data(self._journal_fd)
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
            _write_all(fd, b"".join(frames))
        else:
            path = self._log_path(workflow_id)
            fd = -1
            if first is not None and _seq_of(first) == 1:  # most likely no log yet
                with contextlib.suppress(FileExistsError):
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                    data = _log_header(workflow_id) + b"".join(frames)
                    self._dir_dirty = True
            if fd < 0:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    data = b"".join(frames)
                except FileNotFoundError:
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                    data = _log_header(workflow_id) + b"".join(frames)
                    self._dir_dirty = True
            self._fds[workflow_id] = fd
            if len(self._fds) > self._max_fds:
                os.close(self._fds.popitem(last=False)[1])  # a checkpoint fsyncs it by path
            _write_all(fd, data)
        self._dirty.add(workflow_id)

    def _delete_log(self, workflow_id: str) -> None:
        fd = self._fds.pop(workflow_id, None)
        if fd is not None:
            os.close(fd)
        self._dirty.discard(workflow_id)
        if _unlink(self._log_path(workflow_id)):
            self._dir_dirty = True

    def _checkpoint_or_break(self, final: bool) -> None:
        try:
            self._checkpoint(final)
        except OSError as exc:
            self._broken = _write_error(self.url, "checkpointing the journal", exc, self.path)

    def _checkpoint(self, final: bool) -> None:
        """Make the logs durable on their own, then empty the journal (commit thread)."""
        if self._strict or final:
            self._stats["fsyncs"] += self._sync_dirty()
            self._dirty.clear()
            self._dir_dirty = False
        if self._journal_size or self._journal_alloc or final:
            os.ftruncate(self._journal_fd, 0)
            os.fsync(self._journal_fd)
            self._journal_size = self._journal_alloc = 0
        if self._strict and not final:
            self._reserve_journal(1)
        self._stats["checkpoints"] += 1

    def _reserve_journal(self, needed: int) -> None:
        """Make sure ``needed`` bytes past the journal's end are already allocated.

        The journal file is extended with zeros ahead of the batches written into it, so
        that a batch's fdatasync flushes data only, not the file's size and extents too:
        measured here about 20 % more commits per second than appending. A reader or a
        recovery sees the zeros as the end of the data (an empty record is never written).
        """
        end = self._journal_size + needed
        if end <= self._journal_alloc:
            return
        # Never more than a small share of the free space: on a small disk a fixed 4 MiB
        # would leave no room for the logs (or not fit at all).
        ahead = min(JOURNAL_PREALLOC_BYTES, _free_bytes(self._journal_fd) // 8)
        old_alloc = self._journal_alloc
        new_alloc = old_alloc + ahead
        if new_alloc < end:  # no room to allocate ahead: the batch extends the file itself
            self._journal_alloc = end
            return
        zeros = bytes(min(new_alloc - old_alloc, 1 << 20))
        pos = old_alloc
        try:
            while pos < new_alloc:
                pos += os.pwrite(self._journal_fd, zeros[: new_alloc - pos], pos)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            # The free space was less than reported (reserved blocks, another writer):
            # give the zeros back and let the batch extend the file itself.
            os.ftruncate(self._journal_fd, old_alloc)
            self._journal_alloc = end
            return
        os.fsync(self._journal_fd)
        self._journal_alloc = new_alloc

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
        return self._load(workflow_id, self._log_path(workflow_id), after, overlay)

    def _load(
        self,
        workflow_id: str,
        path: str,
        after: int,
        overlay: dict[str, _Overlay] | None,
        scan: _LogScan | None = None,
    ) -> list[AnyEvent]:
        """Decode a log (``scan`` if the caller has scanned it already) plus a reader's overlay."""
        extra = overlay.get(workflow_id) if overlay else None
        records: list[_Record] = []
        tail_damage: tuple[int, str] | None = None
        if extra is None or not extra.reset:
            if scan is None:
                buf = _read_file(path)
                scan = None if buf is None else _scan_log(buf)
            if scan is not None:
                if scan.damage is not None:
                    raise CorruptLogError(workflow_id, *scan.damage)
                if scan.workflow_id not in (None, workflow_id):
                    raise CorruptLogError(
                        workflow_id, len(LOG_MAGIC), f"the log belongs to workflow {scan.workflow_id!r}"
                    )
                records = scan.events.records()
                tail_damage = scan.tail_damage
        if extra is not None and extra.events:
            last = 0
            if records:
                pos, payload = records[-1]
                try:
                    last = _seq_of(payload)
                except msgspec.DecodeError as exc:
                    raise CorruptLogError(workflow_id, pos, f"undecodable event: {exc}") from exc
            for payload in extra.events:
                try:
                    seq = _seq_of(payload)
                except msgspec.DecodeError:
                    break  # a reader shows what it can; the writer's recovery will say why
                if seq == last + 1:
                    records.append((-1, payload))
                    last = seq
                    tail_damage = None  # the journal restores the damaged last record
        if tail_damage is not None:
            raise CorruptLogError(workflow_id, *tail_damage)
        return _decode_events(workflow_id, records, after)

    def _journal_overlay(self) -> dict[str, _Overlay] | None:
        """A reader's view of a dead writer's journal (None when there is nothing to add).

        The journal is read before the logs, so a writer recovering meanwhile can only
        make the logs newer than the overlay, and events are matched by seq.
        """
        if not self.read_only:
            return None
        try:
            if os.stat(self._journal_path).st_size == 0:
                return None
        except FileNotFoundError:
            return None
        if _writer_alive(self._lock_path):
            return None
        buf = _read_file(self._journal_path) or b""
        overlay: dict[str, _Overlay] = {}
        for _, payload in _scan_frames(buf, 0, _JOURNAL_KEY).records():
            try:
                entry = _journal_decoder.decode(payload)
            except msgspec.DecodeError:
                break
            if entry.deleted:
                overlay[entry.workflow_id] = _Overlay(reset=True)
            else:
                overlay.setdefault(entry.workflow_id, _Overlay()).events.extend(entry.events)
        return overlay

    async def list_workflows(self) -> list[str]:
        """Ids of every workflow with a log (a writer includes those only queued)."""
        if not self.read_only and self._state == "open":
            return [*self._last_seq, *self._corrupt]
        return await anyio.to_thread.run_sync(self._list_sync)

    def _list_sync(self) -> list[str]:
        overlay = self._journal_overlay()
        ids = [
            workflow_id
            for workflow_id, path in self._list_files()
            if (overlay and workflow_id in overlay) or _lists_log(workflow_id, path)
        ]
        if overlay:
            known = set(ids)
            ids = [w for w in ids if not (w in overlay and overlay[w].reset and not overlay[w].events)]
            ids += [w for w, o in overlay.items() if o.events and w not in known]
        return ids

    def _list_files(self) -> list[tuple[str, str]]:
        """(workflow id, path) of every log file; hashed names are resolved by their header."""
        try:
            names = os.listdir(self._workflows_dir)
        except FileNotFoundError:
            return []
        out: list[tuple[str, str]] = []
        for name in names:
            path = os.path.join(self._workflows_dir, name)
            workflow_id = _workflow_id_from_name(name)
            if workflow_id is None and name.startswith("~") and name.endswith(LOG_SUFFIX):
                workflow_id = _read_header_id(path)
                if workflow_id is not None and log_file_name(workflow_id) != name:
                    workflow_id = None
            if workflow_id is not None:
                out.append((workflow_id, path))
        return out

    async def read_all(self) -> dict[str, list[AnyEvent] | CorruptLogError]:
        """Every workflow's events (or its ``CorruptLogError``), read in one thread hop."""
        known: list[str] | None = None
        warm: dict[str, _LogScan] = {}
        if not self.read_only and self._state == "open":
            known = list(self._last_seq)  # snapshot: the loop keeps adding to it
            warm, self._warm = self._warm, {}
        corrupt = dict(self._corrupt)
        return await anyio.to_thread.run_sync(self._read_all_sync, known, corrupt, warm)

    def _read_all_sync(
        self, known: list[str] | None, corrupt: dict[str, CorruptLogError], warm: dict[str, _LogScan]
    ) -> dict[str, list[AnyEvent] | CorruptLogError]:
        with _gc_paused():
            overlay = self._journal_overlay()
            if known is not None:
                pairs = [(w, self._log_path(w)) for w in known]
            else:
                pairs = self._list_files()
                if overlay:
                    listed = {w for w, _ in pairs}
                    pairs += [(w, self._log_path(w)) for w in overlay if w not in listed]
            out: dict[str, list[AnyEvent] | CorruptLogError] = dict(corrupt)
            for workflow_id, path in pairs:
                if workflow_id in corrupt:
                    continue
                try:
                    events = self._load(workflow_id, path, 0, overlay, warm.get(workflow_id))
                except CorruptLogError as exc:
                    out[workflow_id] = exc
                    continue
                if events:
                    out[workflow_id] = events
            return out

    async def delete(self, workflow_id: str) -> bool:
        """Durably remove the workflow's log; False if it had none. The id is then free."""
        if self._state != "open" or self.read_only or self._closing:
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
            stamp = await anyio.to_thread.run_sync(_stat_stamps, paths)
            # Also re-read now and then: a writer's death can change a reader's view
            # (the journal overlay) without changing any file.
            if stamp != seen or polls % 20 == 0:
                seen = stamp
                if await self.read(workflow_id, after):
                    return
            await anyio.sleep(poll_interval)

    async def writer_alive(self) -> bool:
        """True in the writer itself; a reader probes the lock (never waits for it)."""
        if not self.read_only:
            return self._state == "open" and not self._closing
        return await anyio.to_thread.run_sync(_writer_alive, self._lock_path)

    async def owner_alive(self, owner: str | None) -> bool:
        """Whether engine ``owner`` writes this store now: the writer's own id, or for a
        reader the id that the live writer left in the LOCK file."""
        if not self.read_only:
            return await super().owner_alive(owner)
        if owner is None:
            return False
        alive, holder = await anyio.to_thread.run_sync(_live_owner, self._lock_path)
        return alive and holder == owner

    # -- verification -------------------------------------------------------------------------

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
        if workflow_id is not None:
            pairs = [(workflow_id, self._log_path(workflow_id))]
        else:
            pairs = self._list_files()
            listed = {p for _, p in pairs}
            try:
                names = sorted(os.listdir(self._workflows_dir))
            except FileNotFoundError:
                names = []
            for name in names:  # logs whose name or header does not resolve to an id
                path = os.path.join(self._workflows_dir, name)
                if name.endswith(LOG_SUFFIX) and path not in listed:
                    pairs.append((name, path))
        overlay = self._journal_overlay() or {}
        problems: list[tuple[str, int, str]] = []
        notes: list[tuple[str, int, str]] = []
        for wid, path in pairs:
            buf = _read_file(path)
            if buf is not None:
                found, noted = _check_log(wid, os.path.basename(path), buf, overlay.get(wid))
                problems.extend(found)
                notes.extend(noted)
        return problems, notes


def _check_log(
    workflow_id: str, name: str, buf: bytes, overlay: _Overlay | None
) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    """The problems and the notes (see FileStore.notes) of one log."""
    scan = _scan_log(buf)
    problems: list[tuple[str, int, str]] = []
    notes: list[tuple[str, int, str]] = []
    if scan.workflow_id is not None and log_file_name(scan.workflow_id) != name:
        problems.append((workflow_id, len(LOG_MAGIC), f"header names workflow {scan.workflow_id!r}"))
    expected = 1
    for pos, payload in scan.events.records():
        try:
            event = decode_event(payload)
        except msgspec.DecodeError as exc:
            problems.append((workflow_id, pos, f"undecodable event: {exc}"))
            continue
        if event.seq != expected:
            problems.append((workflow_id, pos, f"seq {event.seq} where {expected} was expected"))
        expected = event.seq + 1
    if scan.damage is not None:
        problems.append((workflow_id, *scan.damage))
        return problems, notes
    journaled = _journaled_seqs(overlay)
    if scan.tail_damage is not None:
        pos, what = scan.tail_damage
        if expected in journaled:
            notes.append((workflow_id, pos, f"{what}; the journal holds its event: a writer restores it"))
        else:
            problems.append((workflow_id, pos, what))
    elif not scan.events.starts and not journaled:
        what = (
            "the log holds no event (what a crash between creating it and writing its first "
            "event leaves): a writer opening the store removes it"
        )
        notes.append((workflow_id, 0, what))
    elif scan.good_end < len(buf):
        what = (
            f"incomplete last record ({len(buf) - scan.good_end} bytes, a write cut short): a writer "
            "opening the store cuts it (and redoes it from the journal if it was acknowledged)"
        )
        notes.append((workflow_id, scan.good_end, what))
    return problems, notes


# -- lock and file helpers (worker threads only) ---------------------------------------------


def _acquire_lock(lock_path: str, store_path: str, owner_id: str | None) -> int:
    """Take the writer lock or raise ``StoreLockedError`` with the holder's pid.

    The LOCK file then holds the writer's pid and its engine id (``owner_id``), one a line.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A reader probing writer_alive() holds a shared lock for microseconds: retry briefly
        # so that a probe never makes a starting writer fail.
        for attempt in range(6):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if attempt == 5:
                    raise StoreLockedError(store_path, _read_pid(fd)) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{owner_id or ''}\n".encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _read_holder(fd: int) -> tuple[int, str | None] | None:
    """(pid, engine id) from the LOCK file; None if unreadable."""
    for _ in range(5):  # the holder writes them right after locking
        try:
            lines = os.pread(fd, 4096, 0).decode().split("\n")
            return int(lines[0]), (lines[1] if len(lines) > 2 and lines[1] else None)
        except (ValueError, UnicodeDecodeError):
            time.sleep(0.01)
    return None


def _read_pid(fd: int) -> int | None:
    holder = _read_holder(fd)
    return None if holder is None else holder[0]


def _live_owner(lock_path: str) -> tuple[bool, str | None]:
    """(whether a writer holds the lock, its engine id), for a reader."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False, None
    try:
        if not _locked(fd):
            return False, None
        holder = _read_holder(fd)
        return True, (None if holder is None else holder[1])
    finally:
        os.close(fd)


def _writer_alive(lock_path: str) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return _locked(fd)
    finally:
        os.close(fd)


def _locked(fd: int) -> bool:
    """Whether a writer holds the flock: probe with a shared lock, never wait for it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many long-lived objects (scanning and decoding a
    whole store): each collection would re-traverse them all; measured 2-3x the CPU time.
    Process-wide, but short, and a GC disabled by the application stays disabled."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _journaled_seqs(overlay: _Overlay | None) -> set[int]:
    """The seqs a dead writer's journal holds for a workflow (none when it deletes it)."""
    seqs: set[int] = set()
    for payload in overlay.events if overlay is not None and not overlay.reset else ():
        with contextlib.suppress(msgspec.DecodeError):
            seqs.add(_seq_of(payload))
    return seqs


def _lists_log(workflow_id: str, path: str) -> bool:
    """Whether a reader lists a log: it holds an event, or damage to report. Not a log that
    is what a crash between its creation and its first write leaves (0 bytes, a torn
    header or first event), which holds no acknowledged event and a writer removes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        header = len(_log_header(workflow_id))
        head = os.pread(fd, FRAME_HEADER.size, header)
    finally:
        os.close(fd)
    if len(head) == FRAME_HEADER.size:
        length, _ = FRAME_HEADER.unpack(head)
        if length and header + FRAME_HEADER.size + length <= size:
            return True  # a complete first record: the common case, decided by one read
    buf = _read_file(path)
    if buf is None:
        return False
    scan = _scan_log(buf)
    return bool(scan.events.starts) or scan.damage is not None or scan.tail_damage is not None


def _read_header_id(path: str) -> str | None:
    """The workflow id in a log's header (enough bytes for a 256-character id)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.read(fd, len(LOG_MAGIC) + FRAME_HEADER.size + 4 * 256)
    finally:
        os.close(fd)
    return _scan_log(head).workflow_id


def _truncate(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat_stamps(paths: Sequence[str]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size))
    return out


def _max_open_logs() -> int:
    """Append fds kept open: a quarter of the open-files limit, between 8 and 4096."""
    if sys.platform == "win32":
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(8, min(4096, soft // 4))


# Past this many logs to make durable, one syncfs(2) of the file system beats an fsync per
# file by far (each fsync is a journal commit; measured 40x for 500 files).
_SYNCFS_THRESHOLD = 8


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def _syncfs_dir(path: str) -> bool:
    """syncfs(2) the file system holding ``path``; False when unavailable (then fsync
    each file). Linux reports writeback errors through it since 5.8."""
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) == 0:
            return True
        err = ctypes.get_errno()
    finally:
        os.close(fd)
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), path)


def _write_error(url: str, what: str, exc: BaseException, path: str | None = None) -> StoreError:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL and path is not None:
        what = f"the disk is full: {what} failed ({exc}; {_free_bytes_at(path)} bytes free on {path})"
        then = "free some space, then close the store and open it again to recover from its journal"
    else:
        what = f"{what} failed ({exc})"
        then = "close it and open it again to recover from its journal"
    error = StoreError(f"{url}: {what}; the store refuses further writes: {then}")
    error.__cause__ = exc
    return error


_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _free_bytes(fd: int) -> int:
    """Bytes an unprivileged process may still allocate on the file system of ``fd``."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize


def _free_bytes_at(path: str) -> int | str:
    try:
        st = os.statvfs(path)
    except OSError:
        return "?"
    return st.f_bavail * st.f_frsize
