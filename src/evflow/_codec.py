"""Encoding: events to bytes (one reused msgpack encoder/decoder), record framing, and
user values (step arguments and outputs).

Values are msgpack where that round-trips with the same types: ``None``, ``bool``,
``int`` (64-bit), ``float``, ``str``, ``bytes``, and ``list``/``tuple``/``dict`` of them
(tuples and exceptions travel as msgpack extensions, so a tuple comes back a tuple).
Anything else is pickled unless pickling is refused. The first byte of an encoded value
says which (``VALUE_MSGPACK`` or ``VALUE_PICKLE``).

A framed record is ``<u32 length><u32 crc32(payload)><payload>``, little-endian.
"""

from __future__ import annotations

import importlib
import pickle
import struct
import sys
import traceback
import types
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from ._errors import StepError
from ._errors import UnencodableError as UnencodableError
from ._events import AnyEvent, ErrorInfo, Event

__all__ = [
    "FRAME_HEADER",
    "Frames",
    "Ref",
    "UnencodableError",
    "decode_event",
    "decode_value",
    "encode_event",
    "encode_value",
    "error_info",
    "exception_from_info",
    "frame",
    "import_path",
    "import_object",
    "imported_object",
    "read_frames",
    "substitute_refs",
]

VALUE_MSGPACK = 0
VALUE_PICKLE = 1
_EXT_TUPLE = 1
_EXT_REF = 2
_EXT_ERROR = 3
_MAX_INT = 2**64 - 1
_MIN_INT = -(2**63)

FRAME_HEADER = struct.Struct("<II")

_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    """Encode one event (msgpack, tagged)."""
    return _event_encoder.encode(event)


def decode_event(data: bytes | memoryview) -> AnyEvent:
    """Decode one event; raises ``msgspec.DecodeError`` (a ``ValueError``) when invalid."""
    event: AnyEvent = _event_decoder.decode(data)
    return event


def frame(payload: bytes) -> bytes:
    """Wrap a payload in a length-and-checksum frame."""
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class Frames(NamedTuple):
    """The intact frames at the start of a buffer, as positions (plain ints: cheap to
    keep for every record of a store, and nothing for the GC to traverse)."""

    starts: list[int]  # where each intact frame starts
    ends: list[int]  # where it ends; its payload is buf[start + FRAME_HEADER.size : end]
    end: int  # where the intact frames end: the end of the buffer, or a frame that is not
    #: Why the frame at ``end`` is not intact ("" when ``end`` is the end of the buffer):
    #: "torn" (it runs past the end), "checksum mismatch", or "empty record" (length 0,
    #: which ``frame`` never writes: zeros, e.g. a file allocated ahead or a lost write).
    problem: str


def read_frames(buf: bytes, start: int = 0) -> Frames:
    """Split ``buf`` into the frames of ``frame``, from ``start`` up to the first one that
    is not intact (what follows a damaged frame cannot be found by its length alone).

    The one frame reader: the file store scans every log with it when it opens, so this
    loop is the cold-start cost (no generator step, no copy per record).
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
        if end - pos < header:
            return Frames(starts, ends, pos, "torn")
        length, crc = unpack(buf, pos)
        stop = pos + header + length
        if stop > end:
            return Frames(starts, ends, pos, "torn")
        if not length:
            return Frames(starts, ends, pos, "empty record")
        if crc32(view[pos + header : stop]) != crc:
            return Frames(starts, ends, pos, "checksum mismatch")
        starts.append(pos)
        ends.append(stop)
        pos = stop
    return Frames(starts, ends, pos, "")


# -- user values -------------------------------------------------------------------------


class Ref:
    """Stands for a dependency's value inside recorded step arguments."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and other.name == self.name

    def __hash__(self) -> int:
        return hash(("evflow.Ref", self.name))

    def __repr__(self) -> str:
        return f"Ref({self.name!r})"

    def __reduce__(self) -> tuple[type[Ref], tuple[str]]:
        return (Ref, (self.name,))


class _Unsupported(Exception):
    pass


class _Tuple:
    """A tuple on its way to msgpack (which would otherwise write it as a list)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


_PLAIN = (type(None), bool, int, float, str, bytes)


def _error_ext(exc: BaseException) -> msgspec.msgpack.Ext:
    info = error_info(exc, allow_pickle=False)
    return msgspec.msgpack.Ext(_EXT_ERROR, _event_encoder.encode(info))


def _enc_hook(obj: Any) -> Any:
    if type(obj) is _Tuple:
        return msgspec.msgpack.Ext(_EXT_TUPLE, _value_encoder.encode(obj.items))
    if type(obj) is Ref:
        return msgspec.msgpack.Ext(_EXT_REF, obj.name.encode())
    if isinstance(obj, BaseException):
        return _error_ext(obj)
    raise _Unsupported(type(obj).__qualname__)


def _check(value: Any, refs: Callable[[Any], str | None] | None) -> Any:
    """Return ``value`` with nodes turned into ``Ref``; raise ``_Unsupported`` for types
    that msgpack would not give back as they are."""
    t = type(value)
    if t in _PLAIN:
        if t is int and not _MIN_INT <= value <= _MAX_INT:
            raise _Unsupported("int")
        return value
    if t is list:
        return [_check(v, refs) for v in value]
    if t is tuple:
        return _Tuple([_check(v, refs) for v in value])
    if t is dict:
        out = {}
        for k, v in value.items():
            kt = type(k)
            if kt is not str and (kt is not int or not _MIN_INT <= k <= _MAX_INT):
                raise _Unsupported("dict key")
            out[k] = _check(v, refs)
        return out
    if refs is not None:
        name = refs(value)
        if name is not None:
            return Ref(name)
    if t is Ref:
        return value
    if isinstance(value, BaseException):
        return value
    raise _Unsupported(t.__qualname__)


def _swap_refs(value: Any, refs: Callable[[Any], str | None]) -> Any:
    """Replace nodes by ``Ref`` inside lists, tuples and dicts (for the pickle path)."""
    name = refs(value)
    if name is not None:
        return Ref(name)
    t = type(value)
    if t is list:
        return [_swap_refs(v, refs) for v in value]
    if t is tuple:
        return tuple([_swap_refs(v, refs) for v in value])
    if t is dict:
        return {k: _swap_refs(v, refs) for k, v in value.items()}
    return value


_value_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_value_decoder.decode(data))
    if code == _EXT_REF:
        return Ref(bytes(data).decode())
    if code == _EXT_ERROR:
        # Never pickle, never import: a value's exceptions come from classes already imported.
        return exception_from_info(msgspec.msgpack.decode(data, type=ErrorInfo), allow_pickle=False)
    raise ValueError(f"unknown msgpack extension {code} in a recorded value")


_value_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def encode_value(
    value: Any,
    *,
    allow_pickle: bool = True,
    refs: Callable[[Any], str | None] | None = None,
    what: str = "value",
) -> bytes:
    """Encode a user value; ``refs`` maps a dependency node to its step name.

    Raises ``UnencodableError`` naming ``what`` when the value cannot be recorded.
    """
    try:
        checked = _check(value, refs)
    except _Unsupported as exc:
        kind = str(exc)
    except RecursionError:
        kind = "deeply nested value"
    else:
        return bytes((VALUE_MSGPACK,)) + _value_encoder.encode(checked)
    if not allow_pickle:
        raise UnencodableError(
            f"{what} holds a {kind}, which msgpack cannot round-trip, and this engine was "
            "opened with allow_pickle=False; pass plain data (None, bool, int, float, str, "
            "bytes, list, tuple, dict)"
        )
    swapped = _swap_refs(value, refs) if refs is not None else value
    try:
        return bytes((VALUE_PICKLE,)) + pickle.dumps(swapped, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickle raises many types (PicklingError, TypeError, ...)
        raise UnencodableError(f"{what} cannot be recorded: {kind} is not picklable ({exc})") from exc


def decode_value(data: bytes, *, allow_pickle: bool = True) -> Any:
    """Decode a value written by ``encode_value`` (dependencies come back as ``Ref``).

    With ``allow_pickle=False`` a pickled value is refused (``UnencodableError``) rather
    than unpickled: unpickling runs code named by the data.
    """
    if not data:
        raise ValueError("empty encoded value")
    kind = data[0]
    if kind == VALUE_MSGPACK:
        return _value_decoder.decode(memoryview(data)[1:])
    if kind == VALUE_PICKLE:
        if not allow_pickle:
            raise UnencodableError(
                "a recorded value is pickled and this engine was opened with allow_pickle=False"
            )
        return pickle.loads(memoryview(data)[1:])
    raise ValueError(f"unknown value encoding {kind}")


def substitute_refs(value: Any, values: Callable[[str], Any]) -> Any:
    """Replace every ``Ref`` inside lists, tuples and dicts by ``values(name)``."""
    t = type(value)
    if t is Ref:
        return values(value.name)
    if t is list:
        return [substitute_refs(v, values) for v in value]
    if t is tuple:
        return tuple([substitute_refs(v, values) for v in value])
    if t is dict:
        return {k: substitute_refs(v, values) for k, v in value.items()}
    return value


# -- exceptions ----------------------------------------------------------------------------


def import_path(obj: Any) -> str:
    """``module:qualname`` of a class or function."""
    return f"{obj.__module__}:{obj.__qualname__}"


def import_object(path: str) -> Any:
    """Import ``module:qualname``; raises ``ImportError``/``AttributeError`` naming it.

    Importing runs the module's code: only for paths an application trusts (a log read
    with ``allow_pickle=True``); ``imported_object`` is the lookup that never imports.
    """
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_MISSING = object()


def imported_object(path: str) -> Any:
    """The object at ``module:qualname`` if that module is already imported, else None.

    Never imports, and runs no code of what it walks: each name is read from a
    ``__dict__`` (no module ``__getattr__``, no descriptor), which is where a module-level
    definition or a class defined in a class body lives.
    """
    module_name, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None or not qualname:
        return None
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, dict | types.MappingProxyType):
            return None
        obj = namespace.get(part, _MISSING)
        if obj is _MISSING:
            return None
    return obj


def error_info(exc: BaseException, *, allow_pickle: bool) -> ErrorInfo:
    """Record an exception: type path, message, args where encodable, traceback text."""
    try:
        args: bytes | None = encode_value(exc.args, allow_pickle=False)
    except (UnencodableError, RecursionError):
        args = None
    pickled = None
    if allow_pickle and args is None:
        try:
            pickled = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an unpicklable exception still gets recorded by type and text
            pickled = None
    tb = "".join(traceback.format_exception(exc))
    return ErrorInfo(type=import_path(type(exc)), message=str(exc), args=args, pickled=pickled, traceback=tb)


def exception_from_info(info: ErrorInfo, *, allow_pickle: bool = True) -> BaseException:
    """Rebuild a recorded exception with its original type where possible, else ``StepError``.

    With ``allow_pickle=False`` the log is not trusted: nothing is unpickled and no module
    is imported, so the type is rebuilt only from builtins and classes already imported.
    """
    if info.pickled is not None and allow_pickle:
        try:
            exc = pickle.loads(info.pickled)
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # fall back to the type and args below
            pass
    if info.args is not None:
        try:
            cls = import_object(info.type) if allow_pickle else imported_object(info.type)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                args = decode_value(info.args, allow_pickle=allow_pickle)
                rebuilt: BaseException = cls(*args)
                return rebuilt
        except Exception:  # the type moved or its __init__ differs: stand in with StepError
            pass
    return StepError(info.type, info.message, info.traceback)
