"""Tests for the wire codec: round trips, hostile input and every documented rejection."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pachyderm._codec import DEFAULT_LIMITS, JSON, MSGPACK, Limits, decode, encode
from pachyderm._errors import DecodeError, InvalidInputError, UnsupportedContentTypeError

# database=None keeps Hypothesis from writing a .hypothesis/ directory into the repo.
PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

MSGPACK_TYPES = [None, "", MSGPACK, "application/x-msgpack", "application/vnd.msgpack"]
ALL_TYPES = [*MSGPACK_TYPES, JSON, "application/json; charset=utf-8"]

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
KEYS = st.text(max_size=8)
JSON_SCALARS = st.none() | st.booleans() | INT64 | FINITE_FLOATS | st.text(max_size=20)
MSGPACK_SCALARS = JSON_SCALARS | st.binary(max_size=20)


def _nested(scalars: st.SearchStrategy[Any], levels: int) -> st.SearchStrategy[Any]:
    """Scalars, lists and str-keyed dicts nested at most ``levels`` containers deep."""
    if levels == 0:
        return scalars
    inner = _nested(scalars, levels - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=4),
    )


JSON_VALUES = _nested(JSON_SCALARS, 4)
MSGPACK_VALUES = _nested(MSGPACK_SCALARS, 4)

SMALL_LIMITS = st.builds(
    Limits,
    max_bytes=st.integers(min_value=0, max_value=64) | st.just(1024 * 1024),
    max_depth=st.integers(min_value=0, max_value=6),
    max_items=st.integers(min_value=0, max_value=30),
)
ANY_LIMITS = st.just(DEFAULT_LIMITS) | SMALL_LIMITS


def _typed(value: Any) -> Any:
    """A comparable form of ``value`` that also records exact types (True != 1, -0.0 != 0.0)."""
    if isinstance(value, dict):
        return ("dict", tuple((_typed(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_typed(item) for item in value))
    if isinstance(value, float):
        return ("float", value, math.copysign(1.0, value))
    return (type(value).__name__, value)


def _assert_same(actual: Any, expected: Any) -> None:
    assert _typed(actual) == _typed(expected)


def _sort_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sort_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sort_keys(item) for item in value]
    return value


def _assert_acceptable(value: Any, limits: Limits, *, allow_bytes: bool) -> None:
    """What decode promises about anything it returns."""
    scalar_types: tuple[type, ...] = (type(None), bool, int, float, str)
    if allow_bytes:
        scalar_types = (*scalar_types, bytes)
    pending: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            assert depth <= limits.max_depth, f"accepted nesting of {depth} > {limits.max_depth}"
            items += len(node)
            if isinstance(node, dict):
                assert all(type(key) is str for key in node), f"non-str key in {node!r}"
                pending.extend((child, depth + 1) for child in node.values())
            else:
                pending.extend((child, depth + 1) for child in node)
        else:
            assert type(node) in scalar_types, f"unexpected type {type(node).__name__}"
            if isinstance(node, float):
                assert math.isfinite(node), f"accepted non-finite float {node!r}"
    assert items <= limits.max_items, f"accepted {items} items > {limits.max_items}"


def _decode_or_reject(data: bytes, content_type: str | None, limits: Limits) -> None:
    """Decode; anything but a DecodeError (or a value breaking the contract) fails the test."""
    try:
        value = decode(data, content_type, limits)
    except DecodeError as error:
        rejection: DecodeError | None = error
    else:
        rejection = None
    if rejection is not None:
        assert str(rejection), "a DecodeError should say what is wrong"
        return
    assert len(data) <= limits.max_bytes
    is_json = content_type is not None and content_type.startswith(JSON)
    _assert_acceptable(value, limits, allow_bytes=not is_json)


def _nest_lists(levels: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(levels):
        value = [value]
    return value


def _nest_dicts(levels: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(value=MSGPACK_VALUES, content_type=st.sampled_from(MSGPACK_TYPES))
def test_round_trip_preserves_value_and_types(value: Any, content_type: str | None) -> None:
    data = encode(value)
    assert isinstance(data, bytes)
    _assert_same(decode(data, content_type), value)


@PROPERTY_SETTINGS
@given(
    value=JSON_VALUES,
    ensure_ascii=st.booleans(),
    indent=st.none() | st.integers(min_value=0, max_value=3),
    sort_keys=st.booleans(),
    content_type=st.sampled_from(
        [JSON, "application/json; charset=utf-8", "Application/JSON", " application/json "]
    ),
)
def test_json_bodies_decode_to_the_dumped_value(
    value: Any, ensure_ascii: bool, indent: int | None, sort_keys: bool, content_type: str
) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
    decoded = decode(body.encode("utf-8"), content_type)
    _assert_same(decoded, _sort_keys(value) if sort_keys else value)


def _measure(value: Any) -> tuple[int, int]:
    """(container nesting depth, total entries in all containers) of ``value``."""
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return 0, 0
    measured = [_measure(child) for child in children]
    depth = 1 + max((child_depth for child_depth, _ in measured), default=0)
    return depth, len(children) + sum(child_items for _, child_items in measured)


def _near(measured: int, default: int) -> st.SearchStrategy[int]:
    """A limit just below, at or just above ``measured``, or the roomy default."""
    return st.integers(min_value=max(0, measured - 1), max_value=measured + 1) | st.just(default)


@PROPERTY_SETTINGS
@given(
    value_and_format=st.one_of(
        JSON_VALUES.map(lambda value: (value, True)),
        MSGPACK_VALUES.map(lambda value: (value, False)),
    ),
    data=st.data(),
)
def test_limits_reject_exactly_the_values_that_exceed_them(
    value_and_format: tuple[Any, bool], data: st.DataObject
) -> None:
    value, as_json = value_and_format
    if as_json:
        body, content_type = json.dumps(value).encode("utf-8"), JSON
    else:
        body, content_type = encode(value), MSGPACK
    depth, items = _measure(value)
    limits = Limits(
        max_bytes=data.draw(_near(len(body), DEFAULT_LIMITS.max_bytes), label="max_bytes"),
        max_depth=data.draw(_near(depth, DEFAULT_LIMITS.max_depth), label="max_depth"),
        max_items=data.draw(_near(items, DEFAULT_LIMITS.max_items), label="max_items"),
    )
    # Size is checked before parsing; depth and item problems may surface in either order
    # (msgpack's own container-length limits fire while parsing, before the shape check).
    violations = []
    if len(body) > limits.max_bytes:
        violations = [rf"^message of {len(body)} bytes exceeds the limit of {limits.max_bytes}$"]
    else:
        if depth > limits.max_depth:
            violations.append(rf"^nesting deeper than {limits.max_depth} levels$")
        if items > limits.max_items:
            violations.append(rf"^more than {limits.max_items} items in one message$")
            violations.append(rf" exceeds max_(array|map)_len\({limits.max_items}\)$")
    if violations:
        with pytest.raises(DecodeError, match="|".join(f"(?:{v})" for v in violations)):
            decode(body, content_type, limits)
    else:
        _assert_same(decode(body, content_type, limits), value)


NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def _with_non_finite(draw: st.DrawFn) -> Any:
    """A JSON-like value with one non-finite float hidden somewhere inside it."""
    poison: Any = draw(NON_FINITE)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        siblings = draw(st.lists(JSON_SCALARS, max_size=3))
        if draw(st.booleans()):
            index = draw(st.integers(min_value=0, max_value=len(siblings)))
            poison = [*siblings[:index], poison, *siblings[index:]]
        else:
            entries = {f"s{i}": sibling for i, sibling in enumerate(siblings)}
            poison = {**entries, draw(KEYS): poison}
    return poison


@PROPERTY_SETTINGS
@given(value=_with_non_finite(), as_json=st.booleans())
def test_non_finite_floats_are_rejected_anywhere(value: Any, as_json: bool) -> None:
    if as_json:
        body, content_type = json.dumps(value).encode("utf-8"), JSON
        message = r"^JSON constant (NaN|Infinity|-Infinity) is not accepted$"
    else:
        body, content_type = encode(value), MSGPACK
        message = r"^NaN and infinite numbers are not accepted$"
    with pytest.raises(DecodeError, match=message):
        decode(body, content_type)


# Bytes that start msgpack containers, maps, floats, str/bin and extensions, plus
# JSON punctuation and the first letters of constants: garbage and mutations built
# from them reach deeper into the parsers than uniformly random bytes do.
STRUCTURAL_BYTES = [*range(0x80, 0x84), *range(0x90, 0x94), *range(0xC0, 0xE0), 0xA0, 0xA1]
INTERESTING_BYTES = st.sampled_from([*STRUCTURAL_BYTES, 0x01, 0xFF, *b'[]{}",:-.eE0 NIn'])
JSONISH_TEXT = st.text(alphabet='[]{}",:0123456789.eE-+ \ntrufalsenNIiyx\\', max_size=60)
GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.lists(INTERESTING_BYTES | st.integers(min_value=0, max_value=255), max_size=40).map(bytes),
    JSONISH_TEXT.map(lambda text: text.encode("utf-8")),
)


@PROPERTY_SETTINGS
@given(
    data=GARBAGE,
    content_type=st.sampled_from(ALL_TYPES),
    limits=ANY_LIMITS,
)
def test_garbage_decodes_or_raises_decode_error(
    data: bytes, content_type: str | None, limits: Limits
) -> None:
    _decode_or_reject(data, content_type, limits)


@st.composite
def _mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` after zero to three edits; zero edits exercises the limits on valid data."""
    data = bytearray(body)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        operation = draw(st.sampled_from(["flip", "set", "truncate", "append", "insert", "delete"]))
        if operation in {"flip", "set", "delete"} and not data:
            operation = "append"
        if operation == "flip":
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif operation == "set":
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] = draw(INTERESTING_BYTES | st.integers(min_value=0, max_value=255))
        elif operation == "truncate":
            del data[draw(st.integers(min_value=0, max_value=len(data))) :]
        elif operation == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif operation == "insert":
            index = draw(st.integers(min_value=0, max_value=len(data)))
            data[index:index] = draw(
                st.lists(INTERESTING_BYTES, min_size=1, max_size=4).map(bytes)
                | st.binary(min_size=1, max_size=8)
            )
        else:
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            del data[index : index + draw(st.integers(min_value=1, max_value=4))]
    return bytes(data)


@PROPERTY_SETTINGS
@given(
    data=MSGPACK_VALUES.map(encode).flatmap(_mutated),
    content_type=st.sampled_from(MSGPACK_TYPES),
    limits=ANY_LIMITS,
)
def test_mutated_msgpack_decodes_or_raises_decode_error(
    data: bytes, content_type: str | None, limits: Limits
) -> None:
    _decode_or_reject(data, content_type, limits)


@PROPERTY_SETTINGS
@given(
    data=JSON_VALUES.map(lambda value: json.dumps(value).encode("utf-8")).flatmap(_mutated),
    limits=ANY_LIMITS,
)
def test_mutated_json_decodes_or_raises_decode_error(data: bytes, limits: Limits) -> None:
    _decode_or_reject(data, JSON, limits)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def test_encode_produces_expected_msgpack_bytes() -> None:
    assert encode(None) == b"\xc0"
    assert encode({"a": 1}) == b"\x81\xa1a\x01"
    assert encode("x") == b"\xa1x"
    assert encode(b"x") == b"\xc4\x01x"  # bin type, not str
    assert encode(1.5) == b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"  # float64


def test_encode_accepts_64_bit_boundaries() -> None:
    for value in (2**64 - 1, -(2**63)):
        assert decode(encode(value)) == value


def test_bytes_like_values_and_bodies() -> None:
    assert decode(encode(bytearray(b"ab"))) == b"ab"
    assert decode(bytearray(encode([1, "x"]))) == [1, "x"]
    assert decode(memoryview(encode({"k": b"v"}))) == {"k": b"v"}
    assert decode(bytearray(b'{"k": [1]}'), JSON) == {"k": [1]}
    assert decode(memoryview(b'{"k": [1]}'), JSON) == {"k": [1]}


def test_tuples_encode_as_lists() -> None:
    assert decode(encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(2**64, id="int-too-big"),
        pytest.param(-(2**63) - 1, id="int-too-small"),
        pytest.param(datetime(2024, 1, 1, tzinfo=UTC), id="datetime"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param([object()], id="nested-object"),
    ],
)
def test_encode_of_unencodable_value_raises_decode_error(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^value cannot be encoded: .+"):
        encode(value)


def test_encode_of_self_referencing_value_raises_decode_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(DecodeError, match=r"value cannot be encoded: recursion limit"):
        encode(loop)


# ---------------------------------------------------------------------------
# Limits: size, depth, items
# ---------------------------------------------------------------------------


def test_default_limits() -> None:
    assert Limits(max_bytes=1024 * 1024, max_depth=32, max_items=100_000) == DEFAULT_LIMITS


def test_oversized_msgpack_body_is_rejected() -> None:
    body = encode("x" * 40)
    assert len(body) == 42  # str8 header + 40 bytes
    with pytest.raises(DecodeError, match=r"^message of 42 bytes exceeds the limit of 41$"):
        decode(body, limits=Limits(max_bytes=41))
    assert decode(body, limits=Limits(max_bytes=42)) == "x" * 40


def test_oversized_json_body_is_rejected() -> None:
    body = b'"' + b"x" * 20 + b'"'
    with pytest.raises(DecodeError, match=r"^message of 22 bytes exceeds the limit of 10$"):
        decode(body, JSON, Limits(max_bytes=10))


def test_body_over_default_limit_is_rejected() -> None:
    body = b"\xc0" * (1024 * 1024 + 1)
    with pytest.raises(DecodeError, match=r"message of 1048577 bytes exceeds the limit of 1048576"):
        decode(body)


@pytest.mark.parametrize("nest", [_nest_lists, _nest_dicts], ids=["lists", "dicts"])
def test_msgpack_nesting_deeper_than_max_depth_is_rejected(nest: Any) -> None:
    assert decode(encode(nest(32))) == nest(32)
    with pytest.raises(DecodeError, match=r"^nesting deeper than 32 levels$"):
        decode(encode(nest(33)))


@pytest.mark.parametrize("nest", [_nest_lists, _nest_dicts], ids=["lists", "dicts"])
def test_json_nesting_deeper_than_max_depth_is_rejected(nest: Any) -> None:
    assert decode(json.dumps(nest(32)).encode(), JSON) == nest(32)
    with pytest.raises(DecodeError, match=r"^nesting deeper than 32 levels$"):
        decode(json.dumps(nest(33)).encode(), JSON)


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_custom_max_depth_counts_containers_not_scalars(content_type: str) -> None:
    limits = Limits(max_depth=2)

    def body(value: Any) -> bytes:
        return encode(value) if content_type == MSGPACK else json.dumps(value).encode()

    assert decode(body([[1], {"a": "b"}]), content_type, limits) == [[1], {"a": "b"}]
    with pytest.raises(DecodeError, match=r"^nesting deeper than 2 levels$"):
        decode(body([{"a": []}]), content_type, limits)
    # A scalar root is fine even with max_depth=0; any container is not.
    assert decode(body(7), content_type, Limits(max_depth=0)) == 7
    with pytest.raises(DecodeError, match=r"^nesting deeper than 0 levels$"):
        decode(body([]), content_type, Limits(max_depth=0))


def test_extremely_deep_msgpack_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"^nesting deeper than 32 levels$"):
        decode(b"\x91" * 5000 + b"\xc0")


def test_extremely_deep_json_is_rejected() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DecodeError, match=r"^malformed JSON: maximum recursion depth exceeded"):
        decode(body, JSON)


def test_msgpack_array_longer_than_max_items_is_rejected() -> None:
    limits = Limits(max_items=5)
    assert decode(encode([1, 2, 3, 4, 5]), limits=limits) == [1, 2, 3, 4, 5]
    with pytest.raises(DecodeError, match=r"^more than 5 items in one message$"):
        decode(encode([1, 2, 3, 4, 5, 6]), limits=limits)


def test_msgpack_map_larger_than_max_items_is_rejected() -> None:
    value = {str(i): i for i in range(6)}
    with pytest.raises(DecodeError, match=r"^more than 5 items in one message$"):
        decode(encode(value), limits=Limits(max_items=5))


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_too_many_items_across_containers_is_rejected(content_type: str) -> None:
    limits = Limits(max_items=5)

    def body(value: Any) -> bytes:
        return encode(value) if content_type == MSGPACK else json.dumps(value).encode()

    # Items are the outer list's 2 entries plus 2 + 1 inner entries: 5, at the limit.
    assert decode(body([[1, 2], {"a": 3}]), content_type, limits) == [[1, 2], {"a": 3}]
    with pytest.raises(DecodeError, match=r"^more than 5 items in one message$"):
        decode(body([[1, 2], {"a": 3, "b": 4}]), content_type, limits)


def test_json_array_longer_than_max_items_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"^more than 3 items in one message$"):
        decode(b"[1, 2, 3, 4]", JSON, Limits(max_items=3))


def test_too_many_items_at_default_limit() -> None:
    body = b"\x92" + encode([None] * 60_000) * 2
    with pytest.raises(DecodeError, match=r"^more than 100000 items in one message$"):
        decode(body)
    with pytest.raises(DecodeError, match=r"^malformed msgpack: .*100001"):
        decode(b"\xdd\x00\x01\x86\xa1")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\xdd\xff\xff\xff\xff", r"^malformed msgpack: .*4294967295"),
        (b"\xdf\xff\xff\xff\xff", r"^malformed msgpack: .*4294967295"),
    ],
    ids=["array32", "map32"],
)
def test_declared_huge_container_is_rejected_quickly(header: bytes, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(DecodeError, match=message):
        decode(header)
    assert time.perf_counter() - started < 0.5


def test_declared_huge_string_is_rejected_quickly() -> None:
    started = time.perf_counter()
    with pytest.raises(DecodeError, match=r"malformed msgpack"):
        decode(b"\xdb\xff\xff\xff\xff" + b"x" * 10)
    with pytest.raises(DecodeError, match=r"malformed msgpack"):
        decode(b"\xc6\xff\xff\xff\xff" + b"x" * 10)
    assert time.perf_counter() - started < 0.5


# ---------------------------------------------------------------------------
# Rejected content
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(msgpack.packb(msgpack.ExtType(5, b"abc")), id="ext-with-payload"),
        pytest.param(msgpack.packb(msgpack.ExtType(5, b"")), id="empty-ext"),
        pytest.param(msgpack.packb(msgpack.Timestamp(1, 0)), id="timestamp"),
        pytest.param(msgpack.packb([1, msgpack.ExtType(1, b"x")]), id="nested-ext"),
    ],
)
def test_msgpack_extension_types_are_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"ext"):
        decode(body)


def test_an_empty_extension_is_named_as_such() -> None:
    with pytest.raises(DecodeError, match=r"^msgpack extension types are not accepted$"):
        decode(b"\xc7\x00\x05")


def test_an_extension_with_payload_is_named_as_such() -> None:
    with pytest.raises(DecodeError, match=r"^msgpack extension types are not accepted$"):
        decode(msgpack.packb(msgpack.ExtType(5, b"abc")))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x81\x01\x02", r"int is not allowed for map key"),
        (b"\x81\xcb" + b"\x00" * 8 + b"\x01", r"float is not allowed for map key"),
        (b"\x81\xc0\x01", r"NoneType is not allowed for map key"),
        (b"\x81\x91\x01\x01", r"list is not allowed for map key"),
        (b"\x81\xc4\x01a\x02", r"^map keys must be strings, got bytes$"),
        (b"\x91\x81\xa1k\x81\xc4\x01a\x02", r"^map keys must be strings, got bytes$"),
    ],
    ids=["int", "float", "nil", "array", "bytes", "nested-bytes"],
)
def test_non_string_map_keys_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(body)


def test_encode_allows_int_keys_that_decode_rejects() -> None:
    with pytest.raises(DecodeError, match=r"int is not allowed for map key"):
        decode(encode({1: "one"}))
    with pytest.raises(DecodeError, match=r"map keys must be strings, got bytes"):
        decode(encode({b"k": "v"}))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(encode(float("nan")), id="nan64"),
        pytest.param(b"\xca\x7f\xc0\x00\x00", id="nan32"),
        pytest.param(encode(float("inf")), id="inf"),
        pytest.param(encode(float("-inf")), id="-inf"),
        pytest.param(b"\xca\x7f\x80\x00\x00", id="inf32"),
        pytest.param(encode([1.0, {"x": float("nan")}]), id="nested-nan"),
    ],
)
def test_msgpack_non_finite_floats_are_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^NaN and infinite numbers are not accepted$"):
        decode(body)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_non_finite_constants_are_rejected(constant: str) -> None:
    with pytest.raises(DecodeError, match=rf"^JSON constant {constant} is not accepted$"):
        decode(constant.encode(), JSON)
    with pytest.raises(DecodeError, match=rf"^JSON constant {constant} is not accepted$"):
        decode(f'{{"a": [1, {constant}]}}'.encode(), JSON)


@pytest.mark.parametrize("body", [b"1e999", b"[-1e400]", b'{"a": 1E+309}'])
def test_json_overflowing_numbers_are_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^NaN and infinite numbers are not accepted$"):
        decode(body, JSON)


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "a": 2}', b'{"a": 1, "\\u0061": 2}', b'[{"x": {"b": 1, "c": 2, "b": 1}}]'],
    ids=["top-level", "escaped-duplicate", "nested"],
)
def test_json_duplicate_keys_are_rejected(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^JSON object has a duplicate key$"):
        decode(body, JSON)


def test_trailing_bytes_after_msgpack_value_are_rejected() -> None:
    with pytest.raises(DecodeError, match=r"^trailing bytes after the msgpack value$"):
        decode(encode({"a": 1}) + b"\x00")
    with pytest.raises(DecodeError, match=r"^trailing bytes after the msgpack value$"):
        decode(encode(1) + encode(2))


def test_trailing_data_after_json_value_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"^malformed JSON: Extra data"):
        decode(b"[1] x", JSON)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"^malformed msgpack: "),
        (encode([1, 2, 3])[:-1], r"^malformed msgpack: "),
        (encode(list(range(2000)))[:-1], r"^malformed msgpack: "),
        (b"\xdc\x07\xd0" + b"\xc0" * 1500, r"declares 2000 items but only 1500 bytes follow"),
        (b"\xa2\xff\xfe", r"'utf-8' codec can't decode"),
        (b"\xc1", r"^malformed msgpack: "),
    ],
    ids=["empty", "truncated", "truncated-large", "overclaiming", "invalid-utf8", "reserved-byte"],
)
def test_malformed_msgpack_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"^malformed JSON: Expecting value"),
        (b"{", r"^malformed JSON: Expecting property name"),
        (b'"\xff"', r"^malformed JSON: 'utf-8' codec can't decode"),
        (b"1" * 5000, r"^malformed JSON: Exceeds the limit \(4300 digits\)"),
        (b"\xef\xbb\xbf[1]x", r"^malformed JSON: Extra data"),
    ],
    ids=["empty", "unterminated", "invalid-utf8", "huge-int", "bom-then-garbage"],
)
def test_malformed_json_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(body, JSON)


# ---------------------------------------------------------------------------
# Content types and argument types
# ---------------------------------------------------------------------------


def test_unsupported_content_type_is_rejected() -> None:
    assert issubclass(UnsupportedContentTypeError, DecodeError)
    assert issubclass(DecodeError, InvalidInputError)
    with pytest.raises(
        UnsupportedContentTypeError,
        match=r"^content type 'text/plain' is not supported; "
        r"use application/msgpack or application/json$",
    ):
        decode(b"\xc0", "text/plain")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/jsonx", "msgpack", ";"]
)
def test_other_unsupported_content_types(content_type: str) -> None:
    with pytest.raises(UnsupportedContentTypeError, match=r"is not supported"):
        decode(b"1", content_type)


def test_unsupported_content_type_message_is_truncated() -> None:
    content_type = "text/" + "x" * 500
    with pytest.raises(UnsupportedContentTypeError) as caught:
        decode(b"1", content_type)
    message = str(caught.value)
    assert repr(content_type[:80]) in message
    assert len(message) < 200


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "APPLICATION/JSON",
        "  application/json  ",
    ],
)
def test_json_content_type_with_parameters_is_accepted(content_type: str) -> None:
    assert decode(b'{"a": [1, 2.5, null, true]}', content_type) == {"a": [1, 2.5, None, True]}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        MSGPACK,
        "application/x-msgpack",
        "application/vnd.msgpack; v=1",
        "Application/MsgPack",
    ],
)
def test_msgpack_content_types_are_accepted(content_type: str | None) -> None:
    assert decode(b"\x81\xa1a\x92\x01\xc3", content_type) == {"a": [1, True]}


def test_content_type_selects_the_parser() -> None:
    with pytest.raises(DecodeError, match=r"^malformed JSON"):
        decode(encode({"a": 1}), JSON)
    # "[1]" read as msgpack is fixint 0x5b (91) followed by trailing bytes.
    with pytest.raises(DecodeError, match=r"^trailing bytes after the msgpack value$"):
        decode(b"[1]", MSGPACK)


@pytest.mark.parametrize(
    ("data", "type_name"),
    [("\xc0", "str"), (None, "NoneType"), ([1], "list"), (123, "int")],
)
@pytest.mark.parametrize("content_type", [None, JSON])
def test_non_bytes_body_is_rejected(data: Any, type_name: str, content_type: str | None) -> None:
    with pytest.raises(DecodeError, match=rf"^body must be bytes, got {type_name}$"):
        decode(data, content_type)


def test_multibyte_memoryview_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(memoryview(b"\x00\x00").cast("H"))


@pytest.mark.parametrize(
    ("view", "content_type"),
    [
        (memoryview(encode(list(range(10)))).cast("B", shape=[1, 11]), MSGPACK),
        (memoryview(b"[1,2,3,4,5,6,7]").cast("B", shape=[1, 15]), JSON),
        (memoryview(b"[1,2,3,4,5,6,7]" + b" ").cast("Q"), JSON),
    ],
    ids=["2d-msgpack", "2d-json", "uint64-json"],
)
def test_memoryview_size_limit_counts_bytes(view: memoryview, content_type: str) -> None:
    assert view.nbytes > 10
    with pytest.raises(DecodeError, match=r"exceeds the limit of 10"):
        decode(view, content_type, Limits(max_bytes=10))


def test_bytes_content_type_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"1", b"application/json")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        (b"\xdd" + (100_000).to_bytes(4, "big")) * 1000 + b"\xc0" * 200_000,
        b"\xdd\x00\x01\x86\xa0" * 2000,
        b"\xdc\x03\xff" * 340,
        b"\xdf\x00\x00\xff\xff" * 200,
    ],
    ids=["deep-claims-within-body", "claims-beyond-body", "small-body", "maps"],
)
def test_nested_huge_headers_are_refused_before_allocating(body: bytes) -> None:
    """msgpack preallocates declared lengths: a short body must not claim gigabytes."""
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"decoding {len(body)} hostile bytes peaked at {peak / 2**20:.0f} MiB"
