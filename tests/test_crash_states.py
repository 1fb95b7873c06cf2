"""Crash states: every on-disk state a power loss could leave, reopened and checked.

After the approach of ALICE (Pillai et al., "All File Systems Are Not Created Equal",
OSDI 2014). A SIGKILL keeps the page cache, so the subprocess crash tests never lose an
unsynced write and cannot see a missing fsync; this test can. Each workload runs a real
``FileStore`` (or an engine on one) whose I/O seam (``evflow.stores.file._io``) is a
``RecordingIO``: it performs every call and logs each create, mkdir, write, truncate,
rename, unlink, fsync, fdatasync and syncfs with the file (a logical inode), offset and
bytes, and the workload logs what was *acknowledged* (a ``flush`` or ``delete`` that
returned, a step that started, so its dependency's end was reported durable, a ``run``
that returned) at the point of the op log where it was. Then, for every crash point (after
each op), it builds states from the ops so far, writes each into an empty directory,
opens it as a reader and then as a writer (recovery), and asserts that every
acknowledgement made before that crash point holds, that nothing is damaged (no
``CorruptLogError``, recovery does not refuse to open, ``check()`` is clean afterwards),
that each workflow's events are a prefix of what was appended, and that engine workflows
fold.

The persistence model (what a power loss keeps), deliberately harsher than Linux:

- an op on a file (write, truncate) is durable once an fsync of that file or a syncfs
  follows it; fdatasync makes a write durable only if it lies inside the size the file had
  at its last fsync: we assume fdatasync persists no size change (Linux does persist the
  size; the store preallocates its journal and fsyncs, so it must not need that);
- a directory entry change (create, mkdir, rename, unlink) is durable once that directory
  is fsynced (or a syncfs follows); an fsync of the file itself does not persist its name;
- anything not durable may be lost. Entry changes that are not durable reach the disk as
  a prefix, in the order they were made (journaling file systems commit metadata in
  order); writes and truncates that are not durable persist as any subset, in any order
  (so a later append may survive an earlier one, leaving a hole of zeros), and one of the
  dropped writes may be torn: half of it, its first sector (to a 512-byte boundary), or
  only the size it added (zeros).

States per crash point: the durable ops alone, everything, entries without data and data
without entries, then seeded random choices of the above, until a workload has
``MAX_STATES`` distinct states (the LOCK file's content is ignored). The store workloads
record the same batches in every run (no lazy commits: see ``small_steps``), but a
checkpoint fsyncs the logs in the order of a set of ids (string hashing varies between
processes), and the engine workload's batching depends on timing: so the op logs, and the
states, may differ between runs. Every one of them must pass.

The store directory itself is assumed to exist durably. The last test records a writer
recovering a crash state with holes in its logs, and checks every state that a second
power loss, during that recovery, could leave.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import stat
import tempfile
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

import evflow
from evflow._errors import CorruptLogError
from evflow._events import AnyEvent, Event, StepFinished, WorkflowFinished
from evflow.stores import FileStore
from evflow.stores.file import _disk, _io, _journal, _layout, _writer
from store_contract import make_events

pytestmark = pytest.mark.anyio

#: Distinct states checked per workload, at most (each costs two opens of a store).
MAX_STATES = 160
#: Seeded random states tried per crash point (after the fixed ones).
RANDOM_PER_POINT = 6
SECTOR = 512
ENTRY_OPS = frozenset({"create", "mkdir", "rename", "unlink"})
DATA_OPS = frozenset({"write", "truncate"})


@pytest.fixture
def anyio_backend() -> str:
    """The write path runs on the store's thread: one event loop backend is enough."""
    return "asyncio"


# -- recording ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    """One recorded call. Paths are relative to the store directory ("." is the store)."""

    kind: str  # an ENTRY_OPS or DATA_OPS kind, or fsync, fdatasync, fsyncdir, syncfs
    path: str = ""  # entry ops (the source of a rename), fsyncdir
    dest: str = ""  # rename
    ino: int = -1  # create, data ops, fsync, fdatasync: the logical inode
    offset: int = 0  # write: where; truncate: the new size
    data: bytes = b""  # write

    @property
    def parent(self) -> str:
        return os.path.dirname(self.dest or self.path) or "."

    def __str__(self) -> str:
        if self.kind == "write":
            return f"write(#{self.ino}, @{self.offset}, {len(self.data)} bytes)"
        if self.kind == "truncate":
            return f"truncate(#{self.ino}, {self.offset})"
        if self.kind in ("fsync", "fdatasync"):
            return f"{self.kind}(#{self.ino})"
        if self.kind == "create":
            return f"create({self.path} = #{self.ino})"
        if self.kind == "rename":
            return f"rename({self.path} -> {self.dest})"
        if self.kind == "syncfs":
            return "syncfs()"
        return f"{self.kind}({self.path})"


@dataclass
class Disk:
    """Directories and files (path -> logical inode, content) relative to the store."""

    dirs: set[str] = field(default_factory=lambda: {"."})
    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)


#: What a workload was told is durable: ("seq", wid, n, k): incarnation k's events up to
#: seq n; ("step", wid, name): the step's StepFinished; ("end", wid): its WorkflowFinished;
#: ("incarnation", wid, k): the log holds incarnation k or a later one (a delete returned).
#: And one fact that is no acknowledgement: ("deleting", wid, k): from here on, the
#: events of incarnation k may be gone.
Fact = tuple[Any, ...]


class RecordingIO:
    """Stands for ``evflow.stores.file._io``: performs each call and logs it (thread-safe: the
    store has threads)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.ops: list[Op] = []
        self.acks: list[tuple[int, Fact]] = []  # (ops recorded before the ack, fact)
        self._mutex = threading.Lock()
        self._fds: dict[int, int | str] = {}  # fd -> logical inode, or a directory's path
        self._inodes: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> logical inode
        self._next_ino = itertools.count()
        #: What the directory held before the workload (durable): a crash state to recover.
        self.initial = Disk()
        for dirpath, _, filenames in os.walk(root):
            self.initial.dirs.add(os.path.relpath(dirpath, root))
            for name in filenames:
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                ino = self._inodes[st.st_dev, st.st_ino] = next(self._next_ino)
                self.initial.files[os.path.relpath(path, root)] = (ino, Path(path).read_bytes())

    def ack(self, *facts: Fact) -> None:
        with self._mutex:
            self.acks.extend((len(self.ops), fact) for fact in facts)

    def _rel(self, path: str | os.PathLike[str]) -> str | None:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        return None if rel.startswith("..") else rel

    def _log(self, op: Op) -> None:
        with self._mutex:
            self.ops.append(op)

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        assert dir_fd is None
        rel = self._rel(path)
        existed = os.path.lexists(path)
        fd = os.open(path, flags, mode)
        if rel is None:
            return fd
        st = os.fstat(fd)
        with self._mutex:
            if stat.S_ISDIR(st.st_mode):
                self._fds[fd] = rel
                return fd
            key = (st.st_dev, st.st_ino)
            if not existed:
                ino = self._inodes[key] = next(self._next_ino)
                self.ops.append(Op("create", path=rel, ino=ino))
            else:
                ino = self._inodes[key]  # every file of a workload is created by it
                if flags & os.O_TRUNC:
                    self.ops.append(Op("truncate", ino=ino, offset=0))
            self._fds[fd] = ino
        return fd

    def close(self, fd: int) -> None:
        os.close(fd)
        with self._mutex:
            self._fds.pop(fd, None)

    def _ino(self, fd: int) -> int | None:
        target = self._fds.get(fd)
        return target if isinstance(target, int) else None

    def write(self, fd: int, data: Any) -> int:
        written = os.write(fd, data)
        ino = self._ino(fd)
        if ino is not None:
            end = os.lseek(fd, 0, os.SEEK_CUR)  # also right for O_APPEND: the new end
            self._log(Op("write", ino=ino, offset=end - written, data=bytes(memoryview(data)[:written])))
        return written

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        written = os.pwrite(fd, data, offset)
        ino = self._ino(fd)
        if ino is not None:
            self._log(Op("write", ino=ino, offset=offset, data=bytes(memoryview(data)[:written])))
        return written

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)
        ino = self._ino(fd)
        if ino is not None:
            self._log(Op("truncate", ino=ino, offset=length))

    def fsync(self, fd: Any) -> None:
        os.fsync(fd)
        target = self._fds.get(fd)
        if isinstance(target, str):
            self._log(Op("fsyncdir", path=target))
        elif target is not None:
            self._log(Op("fsync", ino=target))

    def fdatasync(self, fd: Any) -> None:
        _io.fdatasync(fd)
        ino = self._ino(fd)
        if ino is not None:
            self._log(Op("fdatasync", ino=ino))

    def replace(
        self, src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
    ) -> None:
        assert src_dir_fd is None and dst_dir_fd is None
        os.replace(src, dst)
        rel_src, rel_dst = self._rel(src), self._rel(dst)
        if rel_src is not None and rel_dst is not None:
            assert os.path.dirname(rel_src) == os.path.dirname(rel_dst)
            self._log(Op("rename", path=rel_src, dest=rel_dst))

    def unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        assert dir_fd is None
        os.unlink(path)
        rel = self._rel(path)
        if rel is not None:
            self._log(Op("unlink", path=rel))

    def makedirs(self, name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        missing: list[str] = []
        path = os.path.abspath(name)
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        os.makedirs(name, mode, exist_ok)
        for path in reversed(missing):
            rel = self._rel(path)
            if rel is not None and rel != ".":
                self._log(Op("mkdir", path=rel))

    def syncfs(self, fd: int) -> int:
        if _io.syncfs is None:
            return -1  # like ENOSYS: the store then fsyncs each file
        result = _io.syncfs(fd)
        if result == 0:
            self._log(Op("syncfs"))
        return result


# -- persistence model and crash states ---------------------------------------------------------


def split_durable(ops: list[Op], point: int, initial: Disk) -> tuple[list[int], list[int]]:
    """Indexes of the effect ops among ``ops[:point]`` that a power loss keeps for sure
    (durable) and of those it may lose (volatile), per the model in the docstring."""
    size: dict[int, int] = defaultdict(int, {ino: len(data) for ino, data in initial.files.values()})
    synced_size = size.copy()
    data: dict[int, list[int]] = defaultdict(list)  # inode -> volatile data ops
    entries: dict[str, list[int]] = defaultdict(list)  # directory -> volatile entry ops
    durable: list[int] = []
    for index, op in enumerate(ops[:point]):
        if op.kind in ENTRY_OPS:
            entries[op.parent].append(index)
        elif op.kind == "write":
            data[op.ino].append(index)
            size[op.ino] = max(size[op.ino], op.offset + len(op.data))
        elif op.kind == "truncate":
            data[op.ino].append(index)
            size[op.ino] = op.offset
        elif op.kind == "fsync":
            durable += data.pop(op.ino, [])
            synced_size[op.ino] = size[op.ino]
        elif op.kind == "fdatasync":
            keep: list[int] = []
            for i in data.pop(op.ino, []):
                done = ops[i].kind == "write" and ops[i].offset + len(ops[i].data) <= synced_size[op.ino]
                (durable if done else keep).append(i)
            if keep:
                data[op.ino] = keep
        elif op.kind == "fsyncdir":
            durable += entries.pop(op.path, [])
        elif op.kind == "syncfs":
            durable += [i for pending in (*data.values(), *entries.values()) for i in pending]
            data.clear()
            entries.clear()
            synced_size.update(size)
    volatile = [i for pending in (*data.values(), *entries.values()) for i in pending]
    return sorted(durable), sorted(volatile)


@dataclass(frozen=True)
class CrashState:
    """The ops a power loss at ``point`` kept; ``torn`` replaces one write's bytes."""

    point: int
    kept: frozenset[int]
    torn: tuple[int, bytes] | None = None
    lost: tuple[int, ...] = ()  # the volatile ops not kept (for messages)

    def describe(self, ops: list[Op]) -> str:
        lines = [f"power loss after op {self.point} of {len(ops)}; lost: "]
        lines[0] += ", ".join(f"[{i}] {ops[i]}" for i in self.lost) or "nothing"
        if self.torn is not None:
            index, data = self.torn
            how = "zeros" if not any(data) else "a prefix"
            lines.append(f"torn: [{index}] {ops[index]} -> {len(data)} bytes ({how})")
        return "\n  ".join(lines)


def materialise(ops: list[Op], state: CrashState, initial: Disk) -> tuple[set[str], dict[str, bytes]]:
    """(directories, file path -> content) after applying the kept ops in their order."""
    dirs = set(initial.dirs)
    names = {path: ino for path, (ino, _) in initial.files.items()}
    content: dict[int, bytearray] = defaultdict(bytearray)
    content.update((ino, bytearray(data)) for ino, data in initial.files.values())
    torn_index = state.torn[0] if state.torn is not None else -1
    for index in sorted(state.kept if torn_index < 0 else state.kept | {torn_index}):
        op = ops[index]
        if op.kind == "mkdir":
            dirs.add(op.path)
        elif op.kind == "create":
            names[op.path] = op.ino
        elif op.kind == "rename":
            if op.path in names:
                names[op.dest] = names.pop(op.path)
        elif op.kind == "unlink":
            names.pop(op.path, None)
        elif op.kind == "write":
            data = state.torn[1] if index == torn_index and state.torn is not None else op.data
            buf = content[op.ino]
            end = op.offset + len(data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[op.offset : end] = data
        elif op.kind == "truncate":
            buf = content[op.ino]
            if len(buf) > op.offset:
                del buf[op.offset :]
            else:
                buf.extend(bytes(op.offset - len(buf)))
    files = {
        path: bytes(buf)
        for path, ino in names.items()
        if (os.path.dirname(path) or ".") in dirs
        for buf in [content[ino]]
    }
    return dirs, files


def torn_variants(op: Op) -> list[bytes]:
    """How a write may persist in part: half, its first sector, or only its size (zeros)."""
    out = [bytes(len(op.data))]
    if len(op.data) > 1:
        out.append(op.data[: len(op.data) // 2])
    first_sector = SECTOR - op.offset % SECTOR
    if 0 < first_sector < len(op.data):
        out.append(op.data[:first_sector])
    return out


def crash_states(ops: list[Op], initial: Disk, seed: str) -> Iterator[CrashState]:
    """Candidate states, the fixed ones for every crash point first, then random ones."""
    splits = [split_durable(ops, point, initial) for point in range(len(ops) + 1)]

    def state(
        point: int, entries: list[int], data: list[int], torn: tuple[int, bytes] | None = None
    ) -> CrashState:
        durable, volatile = splits[point]
        kept = frozenset(durable) | frozenset(entries) | frozenset(data)
        lost = tuple(i for i in volatile if i not in kept and (torn is None or i != torn[0]))
        return CrashState(point, kept, torn, lost)

    for point, (_, volatile) in enumerate(splits):
        entries = [i for i in volatile if ops[i].kind in ENTRY_OPS]
        data = [i for i in volatile if ops[i].kind in DATA_OPS]
        yield state(point, [], [])
        yield state(point, entries, data)
        yield state(point, entries, [])
        yield state(point, [], data)
    rng = random.Random(seed)
    points = list(range(len(splits)))
    rng.shuffle(points)
    for point in points:
        volatile = splits[point][1]
        entries = [i for i in volatile if ops[i].kind in ENTRY_OPS]
        data = [i for i in volatile if ops[i].kind in DATA_OPS]
        for _ in range(RANDOM_PER_POINT):
            kept_entries = entries[: rng.randint(0, len(entries))]
            if rng.random() < 0.5:
                kept_data = data[: rng.randint(0, len(data))]  # in order, a prefix
            else:
                kept_data = [i for i in data if rng.random() < 0.5]
            dropped = [i for i in data if i not in kept_data and ops[i].kind == "write"]
            torn = None
            if dropped and rng.random() < 0.6:
                index = rng.choice(dropped)
                torn = (index, rng.choice(torn_variants(ops[index])))
            yield state(point, kept_entries, kept_data, torn)


def write_state(directory: Path, dirs: set[str], files: dict[str, bytes]) -> None:
    for rel in sorted(dirs, key=lambda d: d.count(os.sep)):
        (directory / rel).mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (directory / rel).write_bytes(data)


def state_key(dirs: set[str], files: dict[str, bytes], n_facts: int) -> bytes:
    digest = hashlib.sha256(repr((n_facts, sorted(dirs))).encode())
    for rel in sorted(files):
        if rel != _layout.LOCK_NAME:  # never read back by a store with no live writer
            digest.update(repr((rel, len(files[rel]))).encode() + files[rel])
    return digest.digest()


# -- checking a state -----------------------------------------------------------------------------

#: Workflow id -> the event histories it had, one per incarnation (a delete starts another).
Histories = dict[str, list[list[AnyEvent]]]


def problems_with(
    view: str,
    seen: dict[str, list[AnyEvent] | CorruptLogError],
    facts: list[Fact],
    histories: Histories,
    engine: bool,
) -> list[str]:
    problems: list[str] = []
    for wid, events in seen.items():
        if isinstance(events, CorruptLogError):
            problems.append(f"{view}: {wid}: {events}")
            continue
        matches = [k for k, history in enumerate(histories.get(wid, [])) if history[: len(events)] == events]
        if not matches:
            problems.append(f"{view}: {wid}: {len(events)} events that are no prefix of what was appended")
            continue
        for fact in facts:
            if fact[1] == wid and fact[0] == "incarnation" and max(matches) < fact[2]:
                problems.append(f"{view}: {wid}: the incarnation deleted before the crash is back")
        if engine:
            evflow.replay(events)  # the fold accepts it
    for fact in facts:
        kind, wid = fact[0], fact[1]
        got = seen.get(wid)
        events = got if isinstance(got, list) else []
        if kind == "seq" and len(events) < fact[2] and ("deleting", wid, fact[3]) not in facts:
            problems.append(f"{view}: {wid}: acknowledged seq {fact[2]}, found {len(events)} events")
        elif kind == "step" and not any(isinstance(e, StepFinished) and e.name == fact[2] for e in events):
            problems.append(f"{view}: {wid}: step {fact[2]} was reported finished, its StepFinished is lost")
        elif kind == "end" and not any(isinstance(e, WorkflowFinished) for e in events):
            problems.append(f"{view}: {wid}: run() returned, its WorkflowFinished is lost")
    return problems


async def check_state(directory: Path, facts: list[Fact], histories: Histories, engine: bool) -> list[str]:
    """Open the state as a reader, then as a writer (recovery), then check it."""
    try:
        async with FileStore(directory, read_only=True) as reader:
            before = await reader.read_all()
        async with FileStore(directory) as writer:
            after = await writer.read_all()
        async with FileStore(directory, read_only=True) as reader:
            problems = [f"check(): {wid} at byte {pos}: {what}" for wid, pos, what in await reader.check()]
            reread = await reader.read_all()
    except Exception as exc:
        return [f"{type(exc).__name__}: {exc}"]
    problems += problems_with("reader before recovery", before, facts, histories, engine)
    problems += problems_with("after recovery", after, facts, histories, engine)
    if reread != after:
        problems.append("a reader after recovery does not see what the writer read")
    return problems


@dataclass
class Outcome:
    states: int = 0
    failures: list[str] = field(default_factory=list)


def scratch_base() -> str | None:
    """tmpfs when there is one: recovery fsyncs each state, and there fsync costs nothing."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


async def check_crash_states(rec: RecordingIO, histories: Histories, seed: str, engine: bool) -> Outcome:
    outcome = Outcome()
    seen: set[bytes] = set()
    with tempfile.TemporaryDirectory(prefix="evflow-crash-states-", dir=scratch_base()) as scratch:
        for state in crash_states(rec.ops, rec.initial, seed):
            if outcome.states >= MAX_STATES:
                break
            dirs, files = materialise(rec.ops, state, rec.initial)
            facts = [fact for at, fact in rec.acks if at <= state.point]
            key = state_key(dirs, files, len(facts))  # the same files may owe more later
            if key in seen:
                continue
            seen.add(key)
            outcome.states += 1
            directory = Path(scratch) / str(outcome.states)
            write_state(directory, dirs, files)
            problems = await check_state(directory, facts, histories, engine)
            if problems:
                outcome.failures.append(state.describe(rec.ops) + "\n    " + "\n    ".join(problems))
            shutil.rmtree(directory)
    return outcome


# -- workloads ------------------------------------------------------------------------------------


async def appends(store: FileStore, rec: RecordingIO, histories: Histories, batches: dict[str, int]) -> None:
    """Append ``batches[wid]`` events to each workflow, flush once, acknowledge them."""
    for wid, count in batches.items():
        incarnations = histories.setdefault(wid, [[]])
        first = len(incarnations[-1]) + 1
        events: list[Event] = make_events(wid, first, count, tag=str(len(incarnations) - 1))
        store.append_nowait(wid, events)
        incarnations[-1].extend(events)  # type: ignore[arg-type]
    await store.flush()
    rec.ack(*[("seq", wid, len(histories[wid][-1]), len(histories[wid]) - 1) for wid in batches])


async def chain(root: Path, rec: RecordingIO) -> Histories:
    """One workflow, a batch at a time: each flush an fdatasync of the journal."""
    histories: Histories = {}
    async with FileStore(root) as store:
        for count in (1, 2, 1, 3, 1, 2, 1, 1):
            await appends(store, rec, histories, {"chain": count})
    return histories


async def group_commit(root: Path, rec: RecordingIO) -> Histories:
    """Several workflows queued together: one journal write and fsync per batch."""
    histories: Histories = {}
    async with FileStore(root) as store:
        for round_ in range(4):
            await appends(store, rec, histories, {f"wf{k}": 1 + (k + round_) % 3 for k in range(4)})
    return histories


async def checkpoints(root: Path, rec: RecordingIO) -> Histories:
    """A small journal: checkpoints mid-run fsync each log and the directory, then empty it."""
    histories: Histories = {}
    async with FileStore(root, checkpoint_bytes=700) as store:
        for round_ in range(6):
            await appends(store, rec, histories, {f"wf{k}": 1 + round_ % 2 for k in range(3)})
        assert store.statistics().checkpoints >= 2
    return histories


async def checkpoints_syncfs(root: Path, rec: RecordingIO) -> Histories:
    """More dirty logs than SYNCFS_THRESHOLD: a checkpoint syncs the file system once."""
    histories: Histories = {}
    many = _disk.SYNCFS_THRESHOLD + 2
    async with FileStore(root, checkpoint_bytes=1500) as store:
        for _ in range(3):
            await appends(store, rec, histories, {f"wf{k:02d}": 1 for k in range(many)})
    return histories


async def delete_and_recreate(root: Path, rec: RecordingIO) -> Histories:
    """A delete (journaled, then the log unlinked), then the id used afresh: a new log."""
    histories: Histories = {}
    async with FileStore(root) as store:
        for count in (2, 1, 2):
            await appends(store, rec, histories, {"doomed": count, "bystander": 1})
        rec.ack(("deleting", "doomed", 0))
        assert await store.delete("doomed")
        histories["doomed"].append([])
        rec.ack(("incarnation", "doomed", 1))
        for count in (1, 2):
            await appends(store, rec, histories, {"doomed": count, "bystander": 1})
    return histories


_recorder: RecordingIO | None = None


@evflow.step
async def link(previous: list[int], workflow_id: str, index: int) -> list[int]:
    assert _recorder is not None
    if index > 0:  # this step runs, so the engine has made the one it depends on durable
        _recorder.ack(("step", workflow_id, f"s{index - 1}"))
    return [*previous, index]


async def engine_chains(root: Path, rec: RecordingIO) -> Histories:
    """Three chains of steps run concurrently by an engine (group-committed)."""
    global _recorder
    _recorder = rec

    async def one(workflow_id: str) -> None:
        node: Any = []
        for index in range(4):
            node = link.options(name=f"s{index}").step(node, workflow_id, index)
        assert await node.run(workflow_id) == [0, 1, 2, 3]
        rec.ack(("step", workflow_id, "s3"), ("end", workflow_id))

    try:
        async with evflow.Engine(FileStore(root)), anyio.create_task_group() as tg:
            for workflow_id in ("wa", "wb", "wc"):
                tg.start_soon(one, workflow_id)
    finally:
        _recorder = None
    async with FileStore(root, read_only=True) as reader:
        everything = await reader.read_all()
    return {wid: [events] for wid, events in everything.items() if isinstance(events, list)}


Workload = Callable[[Path, RecordingIO], Awaitable[Histories]]


def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small preallocation step, so that the journal grows (and is fsynced) mid-workload;
    no lazy commits, so that a batch is what was queued before a flush, whatever the
    timing (the op logs of the store workloads are the same in every run)."""
    monkeypatch.setattr(_journal, "JOURNAL_PREALLOC_BYTES", 1024)
    monkeypatch.setattr(_writer, "LAZY_COMMIT_SECONDS", 3600.0)


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param(chain, id="chain"),
        pytest.param(group_commit, id="group-commit"),
        pytest.param(checkpoints, id="checkpoint"),
        pytest.param(checkpoints_syncfs, id="checkpoint-syncfs"),
        pytest.param(delete_and_recreate, id="delete-and-new-log"),
        pytest.param(engine_chains, id="engine-chains"),
    ],
)
async def test_every_crash_state_keeps_what_was_acknowledged(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    rec = RecordingIO(root)
    small_steps(monkeypatch)
    monkeypatch.setattr(_disk, "_io", rec)
    histories = await workload(root, rec)
    monkeypatch.setattr(_disk, "_io", _io)
    assert rec.acks, "the workload acknowledged nothing"
    engine = workload is engine_chains
    await assert_crash_states_pass(rec, histories, seed=workload.__name__, engine=engine)


async def assert_crash_states_pass(rec: RecordingIO, histories: Histories, seed: str, engine: bool) -> None:
    outcome = await check_crash_states(rec, histories, seed=seed, engine=engine)
    print(f"{seed}: {outcome.states} crash states from {len(rec.ops)} ops")
    assert outcome.states >= min(MAX_STATES, len(rec.ops))  # about one per crash point at least
    assert not outcome.failures, (
        f"{len(outcome.failures)} of {outcome.states} crash states lose acknowledged events or are damaged; "
        "the first:\n" + "\n".join(outcome.failures[:3])
    )


async def test_a_recovery_is_crash_safe_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer opening a crash state (cutting and rewriting logs with holes, redoing the
    journal, checkpointing) may itself lose power at any point: nothing acknowledged
    before the first crash may be lost by the second."""
    small_steps(monkeypatch)
    source = tmp_path / "first"
    source.mkdir()
    first = RecordingIO(source)
    monkeypatch.setattr(_disk, "_io", first)
    histories = await group_commit(source, first)
    monkeypatch.setattr(_disk, "_io", _io)
    # The state after the last acknowledgement, with holes: each log lost its second
    # write, and one log its first (its header) too.
    point = max(at for at, _ in first.acks)
    durable, volatile = split_durable(first.ops, point, first.initial)
    logs = [op.ino for op in first.ops if op.kind == "create" and op.path.startswith(_layout.WORKFLOWS_DIR)]
    writes = {ino: [i for i in volatile if first.ops[i].ino == ino] for ino in logs}
    lost = {writes[ino][1] for ino in logs} | {writes[logs[0]][0]}
    crashed = CrashState(point, frozenset(durable) | frozenset(volatile) - lost)
    root = tmp_path / "store"
    write_state(root, *materialise(first.ops, crashed, first.initial))
    async with FileStore(root, read_only=True) as reader:
        assert await reader.check()  # the logs have holes: the recovery has to repair them

    rec = RecordingIO(root)
    rec.ack(*[fact for at, fact in first.acks if at <= point])
    monkeypatch.setattr(_disk, "_io", rec)
    async with FileStore(root) as store:
        await store.read_all()
    monkeypatch.setattr(_disk, "_io", _io)
    await assert_crash_states_pass(rec, histories, seed="recovery", engine=False)
