"""Property tests of the codec: user values, events and record framing round-trip.

The event strategies are built from the Structs' own type hints, so a field added to the
union is generated (and round-tripped) without touching this file.
"""

from __future__ import annotations

import decimal
import fractions
import math
import types
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evflow import _events
from evflow._codec import (
    FRAME_HEADER,
    UnencodableError,
    decode_event,
    decode_value,
    encode_event,
    encode_value,
    frame,
    read_frames,
)

# -- user values ---------------------------------------------------------------------------

MIN_INT, MAX_INT = -(2**63), 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(MIN_INT, MAX_INT)
    | st.floats()  # NaN and infinities included: compared with `same` below
    | st.text()
    | st.binary()
)
keys = st.text() | st.integers(MIN_INT, MAX_INT)

#: Values msgpack round-trips with the same types (tuples travel as an extension).
plain_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal with identical types at every depth (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(same(k1, k2) for k1, k2 in zip(a, b, strict=True))
            and all(same(a[k], b[k]) for k in a)
        )
    return bool(a == b)


@given(plain_values)
def test_plain_values_round_trip_with_identical_types(value: Any) -> None:
    data = encode_value(value, allow_pickle=False)
    assert same(decode_value(data), value)


@given(plain_values)
def test_plain_values_never_fall_back_to_pickle(value: Any) -> None:
    assert encode_value(value)[0] == 0  # VALUE_MSGPACK: readable by any language's msgpack


class Point:
    """A user class: only pickle can record it."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and other.x == self.x

    def __hash__(self) -> int:
        return hash(self.x)


class MyInt(int):
    """A subclass of a plain type would lose its type through msgpack."""


#: Values msgpack cannot give back as they are.
non_plain_values = st.one_of(
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.integers(MAX_INT + 1, MAX_INT * 4) | st.integers(MIN_INT * 4, MIN_INT - 1),
    st.complex_numbers(allow_nan=False),
    st.decimals(allow_nan=False),
    st.fractions(),
    st.integers().map(Point),
    st.integers(0, 100).map(MyInt),
    st.dictionaries(st.tuples(st.integers(), st.integers()), st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.booleans(), st.integers(), min_size=1, max_size=2),
    st.just(types.SimpleNamespace(a=1)),
)


def embed(value: Any, where: int) -> Any:
    """Put ``value`` somewhere inside plain containers."""
    return [value, {"k": (1, value)}, value][where % 3] if where else value


@given(non_plain_values, st.integers(0, 3))
def test_allow_pickle_false_refuses_non_plain_values(value: Any, where: int) -> None:
    with pytest.raises(UnencodableError, match="allow_pickle=False"):
        encode_value(embed(value, where), allow_pickle=False, what="the arguments of step 'x'")


@given(non_plain_values, st.integers(0, 3))
def test_non_plain_values_fall_back_to_pickle(value: Any, where: int) -> None:
    nested = embed(value, where)
    data = encode_value(nested)
    assert data[0] == 1  # VALUE_PICKLE
    decoded = decode_value(data)
    assert type(decoded) is type(nested)
    if not isinstance(value, types.SimpleNamespace | decimal.Decimal | complex | fractions.Fraction):
        assert decoded == nested


def test_unpicklable_value_is_a_clear_error() -> None:
    with pytest.raises(UnencodableError, match=r"output of step 'x'.*not picklable"):
        encode_value(lambda: None, what="the output of step 'x'")


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ValueError("bad", 3), id="value-error"),
        pytest.param(KeyError("k"), id="key-error"),
        pytest.param(RuntimeError(), id="no-args"),
    ],
)
def test_exceptions_inside_values_keep_their_type(exc: BaseException) -> None:
    decoded = decode_value(encode_value((None, exc), allow_pickle=False))
    assert type(decoded) is tuple
    assert decoded[0] is None
    assert type(decoded[1]) is type(exc)
    assert decoded[1].args == exc.args


# -- events ----------------------------------------------------------------------------------

#: JSON values, as user metadata holds.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for a field type of the event schema."""
    origin = typing.get_origin(tp)
    if tp is int:
        return st.integers(0, 2**63 - 1)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is str:
        return st.text(max_size=12)
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(max_size=24)
    if tp is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in typing.get_args(tp)])
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(strategy_for(item), max_size=3)
    if origin is dict:
        key, value = typing.get_args(tp)
        assert key is str and value is Any, f"unexpected dict type {tp}"
        return st.dictionaries(st.text(max_size=6), json_values, max_size=3)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return struct_strategy(tp)
    raise AssertionError(f"no strategy for field type {tp!r}; extend strategy_for")


def struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


events = st.one_of([struct_strategy(cls) for cls in _events.EVENT_TYPES.values()])


def test_every_event_type_is_in_the_union() -> None:
    union = set(typing.get_args(_events.AnyEvent))
    assert union == set(_events.EVENT_TYPES.values())
    assert all(name == cls.__name__ for name, cls in _events.EVENT_TYPES.items())


@given(events)
def test_events_round_trip(event: _events.Event) -> None:
    decoded = decode_event(encode_event(event))
    assert type(decoded) is type(event)
    assert decoded == event


@given(events)
def test_encoded_events_carry_their_tag(event: _events.Event) -> None:
    raw = msgspec.msgpack.decode(encode_event(event))
    assert raw["type"] == type(event).__name__
    assert raw["seq"] == event.seq


# -- framing -----------------------------------------------------------------------------------

# Never empty: the format has no empty record (a zero length is where the data ends, e.g.
# the zeros of a journal allocated ahead), and no store frames an empty payload.
payload_lists = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8)


def iter_frames(buf: bytes, start: int = 0) -> list[tuple[int, bytes | None, str]]:
    """The production frame reader (``read_frames``, which the file store scans every log
    and its journal with) in the shape these tests check: ``(offset, payload, "")`` per
    intact frame, then ``(offset, None, problem)`` for the frame it stopped at, if any."""
    found = read_frames(buf, start)
    out: list[tuple[int, bytes | None, str]] = [
        (begin, buf[begin + FRAME_HEADER.size : end], "")
        for begin, end in zip(found.starts, found.ends, strict=True)
    ]
    if found.problem:
        out.append((found.end, None, found.problem))
    return out


def stream_of(payloads: list[bytes]) -> tuple[bytes, list[int]]:
    """The framed stream and the offset of each frame."""
    offsets, pos = [], 0
    for payload in payloads:
        offsets.append(pos)
        pos += FRAME_HEADER.size + len(payload)
    return b"".join(frame(p) for p in payloads), offsets


@settings(max_examples=50, deadline=None)
@given(st.lists(events, min_size=1, max_size=6))
def test_events_round_trip_through_frames(batch: list[_events.Event]) -> None:
    stream, offsets = stream_of([encode_event(e) for e in batch])
    out = list(iter_frames(stream))
    assert [(offset, problem) for offset, _, problem in out] == [(o, "") for o in offsets]
    assert [decode_event(payload) for _, payload, _ in out if payload is not None] == batch


@given(payload_lists, st.data())
def test_iter_frames_can_start_at_any_frame(payloads: list[bytes], data: st.DataObject) -> None:
    stream, offsets = stream_of(payloads)
    k = data.draw(st.integers(0, len(payloads) - 1))
    assert [p for _, p, _ in iter_frames(stream, offsets[k])] == payloads[k:]


@given(payload_lists, st.data())
def test_a_truncated_stream_is_reported_torn(payloads: list[bytes], data: st.DataObject) -> None:
    stream, offsets = stream_of(payloads)
    cut = data.draw(st.integers(1, len(stream) - 1).filter(lambda c: c not in offsets))
    out = list(iter_frames(stream[:cut]))
    whole = sum(1 for o, p in zip(offsets, payloads, strict=True) if o + FRAME_HEADER.size + len(p) <= cut)
    assert [(o, p) for o, p, _ in out[:-1]] == list(zip(offsets[:whole], payloads[:whole], strict=True))
    assert out[-1] == (offsets[whole], None, "torn")


@given(payload_lists, st.data())
def test_a_flipped_payload_or_checksum_byte_is_a_checksum_mismatch(
    payloads: list[bytes], data: st.DataObject
) -> None:
    """Damage in a record's checksum or body, anywhere in the stream, is never read past."""
    stream, offsets = stream_of(payloads)
    k = data.draw(st.integers(0, len(payloads) - 1))
    # bytes 4..7 of a frame are its checksum, then the payload; 0..3 (the length) is below
    first, last = offsets[k] + 4, offsets[k] + FRAME_HEADER.size + len(payloads[k]) - 1
    at = data.draw(st.integers(first, last))
    damaged = bytearray(stream)
    damaged[at] ^= data.draw(st.integers(1, 255))
    out = list(iter_frames(bytes(damaged)))
    assert [p for _, p, _ in out[:-1]] == payloads[:k]
    assert out[-1] == (offsets[k], None, "checksum mismatch")


@given(payload_lists, st.data())
def test_a_flipped_length_byte_is_never_read_as_a_good_record(
    payloads: list[bytes], data: st.DataObject
) -> None:
    """A damaged length cannot be told from a torn write by the frame alone (see
    docs/event-log.md), but no record at or after it is ever yielded as sound (a length
    damaged to zero reads as an empty record: where the data ends)."""
    stream, offsets = stream_of(payloads)
    k = data.draw(st.integers(0, len(payloads) - 1))
    at = offsets[k] + data.draw(st.integers(0, 3))
    damaged = bytearray(stream)
    damaged[at] ^= data.draw(st.integers(1, 255))
    out = list(iter_frames(bytes(damaged)))
    assert [p for _, p, _ in out[:-1]] == payloads[:k]
    assert out[-1][0] == offsets[k]
    assert out[-1][1] is None
    assert out[-1][2] in ("torn", "checksum mismatch", "empty record")


@pytest.mark.parametrize(
    "allow_pickle", [pytest.param(True, id="pickle"), pytest.param(False, id="no-pickle")]
)
def test_out_of_range_int_dict_keys_are_not_plain(allow_pickle: bool) -> None:
    value = {2**70: "big"}
    try:
        data = encode_value(value, allow_pickle=allow_pickle)
    except UnencodableError:
        assert not allow_pickle
    else:
        assert allow_pickle
        assert decode_value(data) == value
