"""The fast decoder against the pydantic reference: the same inputs accepted, equal values.

Records are written as JSON text here (not through a JSON library) so that they can say
what a library would not: duplicated keys, NaN, integers past 64 bits, raw bytes, escapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from worker.demo_workload import generate_runs
from worker.errors import RecordError
from worker.models import CallRecord, RunRecord, parse_run
from worker.models.fast_runs import JSON_MAX_DEPTH, CallStruct, RunStruct, decode_run_fast
from worker.models.runs import parse_run_validated
from worker.models.timestamps import (
    NS_PER_SECOND,
    _parse_general,
    format_timestamp_ns,
    parse_rfc3339_ns,
)

# --- JSON text, built by hand ---------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """A JSON object as its key/value pairs, in order, duplicates allowed."""

    pairs: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return next((v for k, v in reversed(self.pairs) if k == key), None)

    def set(self, key: str, value: Any) -> Obj:
        kept = tuple((k, v) for k, v in self.pairs if k != key)
        return Obj((*kept, (key, value)))

    def without(self, key: str) -> Obj:
        return Obj(tuple((k, v) for k, v in self.pairs if k != key))

    def with_pair(self, key: str, value: Any, first: bool) -> Obj:
        return Obj(((key, value), *self.pairs) if first else (*self.pairs, (key, value)))


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: literals no encoder writes (NaN, 01, bad UTF-8...)."""

    text: bytes


def encode(node: Any, ascii_only: bool = True, spaced: bool = False) -> bytes:
    """JSON bytes for a tree of Obj, Raw, list and scalars; `spaced` as `json.dumps(indent=0)`."""
    comma, colon = (b",\n", b": ") if spaced else (b",", b":")
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Obj):
        items = (
            encode(k, ascii_only) + colon + encode(v, ascii_only, spaced) for k, v in node.pairs
        )
        return b"{" + comma.join(items) + b"}"
    if isinstance(node, list):
        return b"[" + comma.join(encode(v, ascii_only, spaced) for v in node) + b"]"
    return json.dumps(node, ensure_ascii=ascii_only).encode()


# --- valid records ----------------------------------------------------------------------

CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]
names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters=CONTROL), min_size=1, max_size=12
)
uint32 = st.integers(0, 2**32 - 1)
#: 1900 to 2100, in ns
instants = st.integers(-2_208_988_800 * NS_PER_SECOND, 4_102_444_800 * NS_PER_SECOND)


@st.composite
def rfc3339(draw: st.DrawFn, ns: int) -> str:
    """`ns` (truncated to the fraction digits drawn) in one of RFC 3339's spellings."""
    offset_min = draw(st.sampled_from([0, 0, 0, 60, -90, 330, -(23 * 60 + 59), 23 * 60 + 59]))
    seconds, fraction = divmod(ns + offset_min * 60 * NS_PER_SECOND, NS_PER_SECOND)
    t = draw(st.sampled_from("Tt"))
    text = datetime.fromtimestamp(seconds, UTC).strftime(f"%Y-%m-%d{t}%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + f"{fraction:09d}"[:digits]
    if offset_min == 0:
        return text + draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    sign = "+" if offset_min > 0 else "-"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@st.composite
def span(draw: st.DrawFn) -> tuple[Any, Any]:
    """(started_at, ended_at) with the end not before the start; ended_at may be absent."""
    start = draw(instants)
    start_text = draw(rfc3339(start))
    end = draw(st.sampled_from(["absent", "null", "same", "later"]))
    if end == "absent":
        return start_text, ...
    if end == "null":
        return start_text, None
    if end == "same":
        return start_text, start_text
    # at least 1 s later: truncating fraction digits moves either by less than that
    return start_text, draw(rfc3339(start + draw(st.integers(NS_PER_SECOND, 10**13))))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3).map(
            lambda d: Obj(tuple(d.items()))
        )
    ),
    max_leaves=6,
)
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=3).map(
    lambda d: Obj(tuple(d.items()))
)
#: field names no record has: ignored by both decoders
unknown = st.lists(
    st.tuples(st.sampled_from(["future", "x", "spans", "Kind", "name "]), json_values),
    max_size=2,
)


def optional(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field value, None (JSON null) or ... (the field left out)."""
    return st.one_of(st.just(...), st.none(), value)


def build(pairs: list[tuple[str, Any]]) -> Obj:
    return Obj(tuple((k, v) for k, v in pairs if v is not ...))


@st.composite
def calls(draw: st.DrawFn) -> Obj:
    started, ended = draw(span())
    pairs = [
        ("kind", draw(st.sampled_from(["llm", "tool"]))),
        ("name", draw(names)),
        ("started_at", started),
        ("ended_at", ended),
        ("output_tokens", draw(optional(uint32))),
        ("prompt_tokens", draw(optional(uint32))),
        ("total_tokens", draw(optional(uint32))),
        ("model_name", draw(optional(st.text(max_size=8)))),
        ("tool_call_count", draw(optional(uint32))),
        ("metadata_snapshot", draw(optional(objects))),
        ("annotated_request", draw(optional(objects))),
        ("annotated_response", draw(optional(objects))),
        *draw(unknown),
    ]
    return build(draw(st.permutations(pairs)))


@st.composite
def records(draw: st.DrawFn) -> Obj:
    started, ended = draw(span())
    run_id = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    pairs = [
        ("id", draw(st.sampled_from([str(run_id), run_id.hex, str(run_id).upper()]))),
        ("agent_id", draw(names)),
        ("calls", draw(st.lists(calls(), max_size=5))),
        ("started_at", started),
        ("ended_at", ended),
        *draw(unknown),
    ]
    return build(draw(st.permutations(pairs)))


# --- near misses ---------------------------------------------------------------------------

#: values msgspec refuses where the reference accepts (it then decides): fast may decline
DECLINED = [Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), Raw(b"1e400"), Raw(b"-1e999")]
ANY_BAD = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    "",
    "x",
    [],
    [None],
    Obj(()),
    10**30,
    -(10**30),
    2**63,
    2**64,
    Raw(b"1" * 4300),
    Raw(b"1" * 4301),
    Raw(b"-0"),
    Raw(b"1e2"),
    Raw(b"1.0"),
    Raw(b"0.0"),
]
INT_EDGES = [0, 1, 2**32 - 1, 2**32, -1, 2**31, 2**63 - 1, Raw(b"4294967295.0"), "7"]
TIMESTAMPS = [
    "2026-03-31T12:00:00Z",
    "2026-03-31T12:00:59.999999999Z",
    "2026-03-31T12:00:60Z",
    "2026-03-31T24:00:00Z",
    "2026-03-31T23:60:00Z",
    "2026-02-29T12:00:00Z",
    "2024-02-29T12:00:00Z",
    "2026-13-01T12:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999999-23:59",
    "2026-03-31T12:00:00",
    "2026-03-31T12:00:00.5",
    "2026-03-31T12:00:00+0000",
    "2026-03-31T12:00:00+24:00",
    "2026-03-31T12:00:00+00:60",
    "2026-03-31T12:00:00.Z",
    "2026-03-31T12:00:00.1234567890Z",
    "2026-03-31T12:00:00.000000000Z",
    "2026-03-31T12:00:00.5 Z",
    "2026-03-31 12:00:00Z",
    " 2026-03-31T12:00:00Z",
    "2026-03-31T12:00:00ZZ",
    "2026-03-31T12:00:0\u0663Z",
    "2026-03-31T12:00:00.\u0663Z",
    "2026-03-31T12:00:00.\u00b2Z",
    "2026-03-31T12:00:00.1_2Z",
    "2026-03-31T12:00:00.+1Z",
    "2026-03-31T12:00:00.-1Z",
    "2026-03-31T12:00:00.5+00:00Z",
    "2026-03-31T12:00:1Z",
    "2026-03-31T12:00Z",
    "20260331T120000Z",
    "2026-W13-2T12:00:00Z",
    "2026-03-31T12:00:00,5Z",
    "2026-03-31T12:00:00.5-00:00",
    "2026-03-31t12:00:00.5z",
    "yesterday",
    -1,
    0,
    10**20,
    1.0,
    True,
]
UUIDS = [
    "00000000-0000-4000-8000-000000000001",
    "00000000000040008000000000000001",
    "ABCDEF00-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-00000000000g",
    "0000000-00000-4000-8000-000000000001",
    "00000000-0000-4000-8000-0000000000011",
    "00000000_0000_4000_8000_000000000001",
    " 00000000-0000-4000-8000-000000000001",
    "",
]
#: forms only the reference takes (fast declines them)
UUIDS_DECLINED = [
    "{00000000-0000-4000-8000-000000000001}",
    "urn:uuid:00000000-0000-4000-8000-000000000001",
]
BAD_NAMES = [
    *(f"a{c}b" for c in CONTROL),
    "\x7f",
    "\x85 C1 is not a control character in SPEC 2",
    "",
    "\u2028",
    "\ufeff",
    "名前",
    Raw(b'"a\\u0000b"'),
    Raw(b'"a\\u007fb"'),
    Raw(b'"\\u0041\\/b"'),
    Raw(b'"a\x7fb"'),
]
JUNK = [
    Raw(b'"\xff"'),
    Raw(b'"\xc0\x80"'),
    Raw(b'"\xed\xa0\x80"'),
    Raw(b'"\xf4\x90\x80\x80"'),
    Raw(b'"\\ud800"'),
    Raw(b'"\\udc00x"'),
    Raw(b'"\\ud83d\\ude00"'),
    Raw(b"01"),
    Raw(b"[1,]"),
    Raw(b'{"a":1,}'),
    Raw(b"tru"),
    Raw(b'"a\tb"'),
    Raw(b"1" * 4301 + b"e-5000"),
    Raw(b"0." + b"1" * 5000),
]
TOP_LEVEL = [b"[]", b'"x"', b"1", b"null", b"", b"{", b"{}", b" {} ", b"\xef\xbb\xbf{}"]


def nested(depth: int) -> Raw:
    return Raw(b"[" * depth + b"]" * depth)


@dataclass(frozen=True)
class Case:
    """A near miss, as bytes or (sometimes) str, as `parse_run` takes both."""

    data: bytes | str
    #: True where the fast path may decline what the reference accepts (see DECLINED)
    fast_may_decline: bool = False


@st.composite
def near_misses(draw: st.DrawFn) -> Case:
    """A valid record with one thing changed, anywhere, to something at or past an edge."""
    record = draw(records())
    ascii_only = draw(st.booleans())
    kind = draw(st.sampled_from(["run", "call", "top", "duplicate", "junk", "depth"]))
    may_decline = False
    if kind == "top":
        return Case(draw(st.sampled_from(TOP_LEVEL)))
    if kind == "depth":  # jiter stops at 200 levels; fast declines over 200 brackets
        depth = draw(st.integers(196, 202))
        record = record.set("future", nested(depth))
        return Case(encode(record), fast_may_decline=True)
    target_is_call = kind == "call" or (kind != "run" and draw(st.booleans()))
    calls_list = list(record.get("calls") or [])
    if target_is_call and not calls_list:
        calls_list = [draw(calls())]
    index = draw(st.integers(0, len(calls_list) - 1)) if target_is_call else 0
    target: Obj = calls_list[index] if target_is_call else record
    fields = (list(CallRecord.model_fields) if target_is_call else list(RunRecord.model_fields)) + [
        "future"
    ]
    field = draw(st.sampled_from(fields))
    if kind == "junk":
        value = draw(st.sampled_from([*JUNK, *DECLINED]))
        may_decline = value in DECLINED or value == JUNK[-1]
    else:
        value, may_decline = draw(bad_value(field))
    if field in ("started_at", "ended_at") and draw(st.booleans()):
        record = record.set(field, value)  # the run's, besides the call's
    if kind == "duplicate" or draw(st.integers(0, 9)) == 0:
        first = draw(st.booleans())
        target = target.with_pair(field, value, first)
        may_decline = may_decline or first  # a bad first value: msgspec stops there
    elif draw(st.integers(0, 9)) == 0:
        target = target.without(field)
    else:
        target = target.set(field, value)
    if target_is_call:
        calls_list[index] = target
        record = record.set("calls", calls_list)
    else:
        record = target
    data = encode(record, ascii_only, spaced=draw(st.booleans()))
    return Case(
        data.decode() if draw(st.integers(0, 9)) == 0 and _utf8(data) else data, may_decline
    )


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def bad_value(draw: st.DrawFn, field: str) -> tuple[Any, bool]:
    """(a value for `field` near or past what it allows, whether fast may decline it)."""
    if field in ("started_at", "ended_at"):
        pool = [*TIMESTAMPS, *ANY_BAD]
    elif field == "id":
        pool = [*UUIDS, *UUIDS_DECLINED, *ANY_BAD]
    elif field in ("agent_id", "name"):
        pool = [*BAD_NAMES, *ANY_BAD]
    elif field.endswith(("_tokens", "_count")):
        pool = [*INT_EDGES, *ANY_BAD]
    elif field == "kind":
        pool = ["llm", "tool", "LLM", "embedding", "llm ", *ANY_BAD]
    elif field == "calls":
        pool = [[None], [7], [[]], "x", Obj(()), *ANY_BAD]
    else:  # model_name, the dict fields, an unknown field
        pool = [Obj((("k", Obj((("k", [1, 2.5, None]),))),)), *ANY_BAD, *DECLINED]
    value = draw(st.sampled_from(pool))
    declined = value in DECLINED or value in UUIDS_DECLINED
    if field in ("started_at", "ended_at") and (
        (isinstance(value, int) and abs(value) >= 2**63) or value == Raw(b"1" * 4300)
    ):
        declined = True  # msgspec's int stops at 64 bits; the reference takes any int
    return value, declined


# --- comparing what each path returns -----------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, float) and a == 0.0:
        return str(a) == str(b)  # -0.0 and 0.0
    return bool(a == b)


def assert_same_run(fast: RunStruct, reference: RunRecord) -> None:
    for field in RunRecord.model_fields:
        if field != "calls":
            assert same_value(getattr(fast, field), getattr(reference, field)), field
    assert len(fast.calls) == len(reference.calls)
    for mine, theirs in zip(fast.calls, reference.calls, strict=True):
        for field in CallRecord.model_fields:
            assert same_value(getattr(mine, field), getattr(theirs, field)), field


def reference_outcome(data: bytes | str) -> RunRecord | RecordError:
    try:
        return parse_run_validated(data)
    except RecordError as exc:
        return exc


# --- the properties ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.booleans(), st.booleans())
def test_fast_path_takes_every_valid_record_with_equal_values(
    record: Obj, ascii_only: bool, spaced: bool
) -> None:
    data = encode(record, ascii_only, spaced)
    assume(data.count(b"[") + data.count(b"{") <= JSON_MAX_DEPTH)  # more: fast declines
    reference = parse_run_validated(data)
    fast = decode_run_fast(data)
    assert fast is not None, data
    assert_same_run(fast, reference)
    from_text = decode_run_fast(data.decode())
    assert from_text is not None
    assert_same_run(from_text, reference)


@settings(
    max_examples=int(os.environ.get("FAST_RUNS_EXAMPLES", 600)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(near_misses())
def test_fast_path_and_reference_accept_the_same_near_misses(case: Case) -> None:
    """Fast accepts only what the reference accepts, with equal values; it declines a valid
    record only where the case says msgspec and jiter differ; parse_run is the reference."""
    reference = reference_outcome(case.data)
    fast = decode_run_fast(case.data)
    accepted = "accepted" if isinstance(reference, RunRecord) else "rejected"
    event(f"reference {accepted}, fast {'declined' if fast is None else 'accepted'}")
    if fast is not None:
        assert isinstance(reference, RunRecord), (case, reference)
        assert_same_run(fast, reference)
    elif not case.fast_may_decline:
        assert isinstance(reference, RecordError), (case, "fast declined a valid record")
    # and parse_run, whichever path answered, is the reference to the letter
    try:
        run = parse_run(case.data)
    except RecordError as exc:
        assert isinstance(reference, RecordError)
        assert (exc.reason, exc.detail) == (reference.reason, reference.detail)
    else:
        assert isinstance(reference, RunRecord), case
        if isinstance(run, RunStruct):
            assert_same_run(run, reference)
        else:
            assert run == reference


def test_structs_have_the_models_fields_in_the_same_order() -> None:
    assert CallStruct.__struct_fields__ == tuple(CallRecord.model_fields)
    assert RunStruct.__struct_fields__ == tuple(RunRecord.model_fields)


def test_the_bench_workload_takes_the_fast_path() -> None:
    for raw in generate_runs(300, 7, seed=5):
        data = orjson.dumps(raw)
        fast = decode_run_fast(data)
        assert fast is not None
        assert_same_run(fast, parse_run_validated(data))


GOOD = (
    b'{"id": "00000000-0000-4000-8000-000000000001", "agent_id": "a", "calls": [],'
    b' "started_at": "2026-03-31T12:00:00Z"'
)


@pytest.mark.parametrize(
    ("extra", "reference_accepts"),
    [
        (b'"future": NaN', True),
        (b'"future": -Infinity', True),
        (
            b'"calls": [{"kind": "llm", "name": "n", "started_at": "2026-03-31T12:00:00Z",'
            b' "metadata_snapshot": {"x": 1e400}}]',
            True,
        ),
        (b'"id": "{00000000-0000-4000-8000-000000000001}"', True),
        (b'"id": "bad", "id": "00000000-0000-4000-8000-000000000001"', True),
        (b'"future": ' + nested(150).text + b', "more": ' + nested(60).text, True),
        (b'"future": ' + nested(201).text, False),
        (b'"future": "\xff"', False),
        (b'"fu\xc0\x80ture": 1', False),
        (b'"future": ' + b"1" * 4301, False),
        (b'"future": ' + b"1" * 4301 + b"e-5000", False),
    ],
)
def test_fast_path_declines_where_msgspec_and_jiter_differ(
    extra: bytes, reference_accepts: bool
) -> None:
    data = GOOD + b", " + extra + b"}"
    assert decode_run_fast(data) is None
    if reference_accepts:
        assert parse_run(data).agent_id == "a"
    else:
        with pytest.raises(RecordError):
            parse_run(data)


def test_a_run_from_the_fast_path_is_frozen() -> None:
    run = decode_run_fast(
        b'{"id": "00000000-0000-4000-8000-000000000001", "agent_id": "a", "calls": [],'
        b' "started_at": "2026-03-31T12:00:00Z"}'
    )
    assert run is not None
    with pytest.raises(AttributeError):
        run.agent_id = "b"  # type: ignore[misc]
    assert msgspec.structs.asdict(run)["started_at"] == parse_rfc3339_ns("2026-03-31T12:00:00Z")


# --- the timestamp parser's cached path against its general one ----------------------------


@st.composite
def timestamp_texts(draw: st.DrawFn) -> tuple[str, str]:
    """(a valid UTC timestamp that primes the parser's cache, a variant of it to parse);
    half the primers in the form records are written in (9 fraction digits, "Z")."""
    ns = draw(instants)
    primer = format_timestamp_ns(ns) if draw(st.booleans()) else draw(rfc3339(ns))
    text = primer
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from("0123456789.:+-ZzTt \u0663\u00b2_x"))
        if edit == "insert":
            text = text[:position] + char + text[position:]
        elif edit == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + char + text[position + 1 :]
    return primer, text


@settings(max_examples=2000, deadline=None)
@given(timestamp_texts())
def test_cached_timestamp_path_agrees_with_the_general_parser(texts: tuple[str, str]) -> None:
    primer, text = texts
    with contextlib.suppress(ValueError):
        _parse_general(primer)  # caches primer's second when it is UTC
    try:
        expected: int | None = _parse_general(text)
    except ValueError:
        expected = None
    try:
        got: int | None = parse_rfc3339_ns(text)
    except ValueError:
        got = None
    assert got == expected, text


def test_text_with_a_lone_surrogate_goes_to_the_reference() -> None:
    text = GOOD.decode().replace('"a"', '"a\ud800"') + "}"
    assert decode_run_fast(text) is None
    with pytest.raises(RecordError) as info:
        parse_run(text)
    assert info.value.reason == "schema"
