"""Ids and cursors: opaque, round-trip, and bad ones are a clear InvalidRequest."""
import datetime as dt

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidRequest
from shared.ids import IdClock, decode_cursor, encode_cursor, parse_id, parse_ids


def test_cursor_round_trip():
    oid = ObjectId()
    assert decode_cursor(encode_cursor(oid)) == oid


@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text())))
def test_garbage_cursor_is_invalid_request(value):
    try:
        decode_cursor(value)
    except InvalidRequest as exc:
        assert exc.status == 400


@pytest.mark.parametrize("value", [{"$ne": None}, ["a"], 12, "zz" * 12, "a" * 23, None, "6b02627a1106ff6d4c84cc9"])
def test_bad_ids(value):
    with pytest.raises(InvalidRequest):
        parse_id(value)


def test_parse_ids_dedupes_and_bounds():
    oid = ObjectId()
    assert parse_ids([str(oid), str(oid)]) == [oid]
    for bad in ([], "x", None, [str(oid)] * 1001, {"$in": []}):
        with pytest.raises(InvalidRequest):
            parse_ids(bad)


def test_ids_sort_by_millisecond_across_processes():
    api, ingest = IdClock(), IdClock()
    t = dt.datetime(2026, 11, 22, 3, 12, 45, 123000, tzinfo=dt.timezone.utc)
    later = t + dt.timedelta(milliseconds=1)
    # Whichever process made them, the later one sorts after: ObjectId() would order these two
    # by the processes' random values.
    assert api.next(t) < ingest.next(later) and ingest.next(t + dt.timedelta(milliseconds=2)) > api.next(later)
    assert api.next(t).generation_time == t.replace(microsecond=0)


def test_ids_of_one_process_strictly_increase_even_when_the_clock_does_not():
    clock = IdClock()
    t = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
    ids = [clock.next(t) for _ in range(70_000)]  # more than one millisecond's counter holds
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert clock.next(t - dt.timedelta(seconds=5)) > ids[-1]  # a clock step back changes nothing
