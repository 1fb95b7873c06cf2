"""The file store's writer lock: ``flock(2)`` on ``LOCK``, held by the one writer for its
whole life, and how readers tell whether (and which engine) holds it.

The lock belongs to the open file, so it goes away when the process exits or dies: a lock
left by a dead process never blocks. POSIX-only, and shared with a child created by a
bare ``fork()`` (use spawn, or exec, for processes that outlive the writer).
"""

from __future__ import annotations

import errno
import os
import sys
import time

from ..._errors import StoreLockedError
from . import _disk

if sys.platform != "win32":  # FileStore.open refuses to open on Windows
    import fcntl

__all__ = ["acquire_lock", "file_id", "live_owner", "lock_held", "read_pid"]


def acquire_lock(lock_path: str, store_path: str, owner_id: str | None) -> int:
    """Take the writer lock or raise ``StoreLockedError`` with the holder's pid.

    The LOCK file then holds the writer's pid and its engine id (``owner_id``), one a line.
    """
    fd = _disk.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A reader probing the lock (lock_held, live_owner) holds a shared lock for
        # microseconds: retry briefly so that a probe never makes a starting writer fail.
        for attempt in range(6):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if attempt == 5:
                    raise StoreLockedError(store_path, read_pid(fd)) from None
                time.sleep(0.01)
        _disk.ftruncate(fd, 0)
        _disk.pwrite(fd, f"{os.getpid()}\n{owner_id or ''}\n".encode(), 0)
        return fd
    except BaseException:
        _disk.close(fd)
        raise


def file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def read_holder(fd: int) -> tuple[int, str | None] | None:
    """(pid, engine id) from the LOCK file; None if unreadable."""
    for _ in range(5):  # the holder writes them right after locking
        try:
            lines = os.pread(fd, 4096, 0).decode().split("\n")
            return int(lines[0]), (lines[1] if len(lines) > 2 and lines[1] else None)
        except (ValueError, UnicodeDecodeError):
            time.sleep(0.01)
    return None


def read_pid(fd: int) -> int | None:
    holder = read_holder(fd)
    return None if holder is None else holder[0]


def live_owner(lock_path: str) -> tuple[bool, str | None]:
    """(whether a writer holds the lock, its engine id), for a reader."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False, None
    try:
        if not locked(fd):
            return False, None
        holder = read_holder(fd)
        return True, (None if holder is None else holder[1])
    finally:
        os.close(fd)


def lock_held(lock_path: str) -> bool:
    """Whether a live writer holds the store's lock (a reader's probe, never waits)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return locked(fd)
    finally:
        os.close(fd)


def locked(fd: int) -> bool:
    """Whether a writer holds the flock: probe with a shared lock, never wait for it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
