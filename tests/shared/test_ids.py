"""Ids and cursors: opaque, round-trip, and bad ones are a clear InvalidRequest."""
import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidRequest
from shared.ids import decode_cursor, encode_cursor, parse_id, parse_ids


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
