"""Records: the merge rule for several sightings of one message id."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_claude.records import StepRecord, merge_into, merge_steps

_FIELDS = st.tuples(
    *[st.integers(0, 5)] * 6,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.floats(0, 10)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELDS, min_size=2, max_size=5))
def test_merge_into_is_merge_steps_in_place(sightings: list[tuple[Any, ...]]) -> None:
    """``report`` merges the streamed copies of a response in place: same result as the
    ledger's ``merge_steps``, whatever the order and values."""
    steps = [StepRecord("m", "s", "claude-sonnet-4-5", "transcript", *v) for v in sightings]
    expected = steps[0]
    for step in steps[1:]:
        expected = merge_steps(expected, step)
    merged = dataclasses.replace(steps[0])
    for step in steps[1:]:
        merge_into(merged, step)
    assert merged == expected
