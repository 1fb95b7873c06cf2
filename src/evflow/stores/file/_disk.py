"""Every change the file store makes to the disk, and the reads that go with it.

The rest of the store calls these (as ``_disk.name``, looked up at call time, so that a
test may replace one); they alone call the I/O seam ``_io``, looked up here at call time
too: ``tests/test_crash_states.py`` replaces ``_disk._io`` with a recorder. The thin
wrappers cost one Python call per system call, made per batch or per file, never per
event. Worker threads (and the writer thread) only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import sys
from collections.abc import Iterator

from ..._errors import StoreError
from . import _io  # every call that changes the disk goes through it (a test swaps it)

if sys.platform != "win32":
    import resource

__all__ = [
    "DISK_FULL",
    "SYNCFS_THRESHOLD",
    "close",
    "fdatasync",
    "free_bytes",
    "free_bytes_at",
    "fsync",
    "fsync_dir",
    "fsync_path",
    "ftruncate",
    "gc_paused",
    "makedirs",
    "max_open_logs",
    "open",
    "pwrite",
    "pwrite_all",
    "read_file",
    "replace",
    "syncfs_dir",
    "truncate",
    "unlink",
    "write_all",
    "write_error",
]

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Past this many logs to make durable, one syncfs(2) of the file system beats an fsync per
#: file by far (each fsync is a journal commit; measured 40x for 500 files).
SYNCFS_THRESHOLD = 8
_READ_SIZE = 1 << 16


# -- the seam's calls, by name ----------------------------------------------------------------


def open(path: str, flags: int, mode: int = 0o777) -> int:
    return _io.open(path, flags, mode)


def close(fd: int) -> None:
    _io.close(fd)


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
    return _io.pwrite(fd, data, offset)


def ftruncate(fd: int, length: int) -> None:
    _io.ftruncate(fd, length)


def fsync(fd: int) -> None:
    _io.fsync(fd)


def fdatasync(fd: int) -> None:
    _io.fdatasync(fd)


def replace(src: str, dst: str) -> None:
    _io.replace(src, dst)


def makedirs(path: str, exist_ok: bool = False) -> None:
    _io.makedirs(path, exist_ok=exist_ok)


# -- helpers ----------------------------------------------------------------------------------


def read_file(path: str) -> bytes | None:
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


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = _io.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[_io.write(fd, view) :]


def fsync_dir(path: str) -> None:
    fd = _io.open(path, os.O_RDONLY)
    try:
        _io.fsync(fd)
    finally:
        _io.close(fd)


def fsync_path(path: str) -> None:
    try:
        fd = _io.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _io.fsync(fd)
    finally:
        _io.close(fd)


def unlink(path: str) -> bool:
    try:
        _io.unlink(path)
    except FileNotFoundError:
        return False
    return True


def truncate(path: str, size: int) -> None:
    fd = _io.open(path, os.O_WRONLY)
    try:
        _io.ftruncate(fd, size)
    finally:
        _io.close(fd)


def syncfs_dir(path: str) -> bool:
    """syncfs(2) the file system holding ``path``; False when unavailable (then fsync
    each file). Linux reports writeback errors through it since 5.8."""
    syncfs = _io.syncfs
    if syncfs is None:
        return False
    fd = _io.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) == 0:
            return True
        err = ctypes.get_errno()
    finally:
        _io.close(fd)
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), path)


def free_bytes(fd: int) -> int:
    """Bytes an unprivileged process may still allocate on the file system of ``fd``."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize


def free_bytes_at(path: str) -> int | str:
    try:
        st = os.statvfs(path)
    except OSError:
        return "?"
    return st.f_bavail * st.f_frsize


def write_error(url: str, what: str, exc: BaseException, path: str | None = None) -> StoreError:
    """The ``StoreError`` of a failed write (the disk is full, or another ``OSError``)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL and path is not None:
        what = f"the disk is full: {what} failed ({exc}; {free_bytes_at(path)} bytes free on {path})"
        then = "free some space, then close the store and open it again to recover from its journal"
    else:
        what = f"{what} failed ({exc})"
        then = "close it and open it again to recover from its journal"
    error = StoreError(f"{url}: {what}; the store refuses further writes: {then}")
    error.__cause__ = exc
    return error


def max_open_logs() -> int:
    """Append fds kept open: a quarter of the open-files limit, between 8 and 4096."""
    if sys.platform == "win32":
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(8, min(4096, soft // 4))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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
