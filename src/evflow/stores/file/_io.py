"""The file store's I/O seam: every system call that changes what is on disk.

``FileStore`` creates, writes, truncates, renames, unlinks and fsyncs files only through
``_disk._io``, which is this module: its names *are* the ``os`` functions, so a call costs
what ``os.write`` costs (a module attribute; a class's static methods measured about
70 ns more per call). ``_disk`` is the one module that calls it, so a test swaps in, as
``_disk._io``, an object with the same names that also records each call, to rebuild
every state a power loss could leave on disk (``tests/test_crash_states.py``). Reads go
straight to ``os``: they change nothing.

Rule for callers: a descriptor opened through the seam is closed through it, so that a
recording implementation can tell which file a descriptor number means.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

__all__ = [
    "close",
    "fdatasync",
    "fsync",
    "ftruncate",
    "makedirs",
    "open",
    "pwrite",
    "replace",
    "syncfs",
    "unlink",
    "write",
]

open = os.open
close = os.close
write = os.write
pwrite = os.pwrite
ftruncate = os.ftruncate
fsync = os.fsync
#: fsync(2) where the system has no fdatasync(2) (macOS).
fdatasync = getattr(os, "fdatasync", os.fsync)
replace = os.replace
unlink = os.unlink
makedirs = os.makedirs


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


#: syncfs(2) (Linux; None elsewhere): returns 0, or -1 with ``ctypes.get_errno()`` set.
syncfs = _load_syncfs()
