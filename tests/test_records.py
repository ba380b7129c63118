"""Records: the merge rule for several sightings of one message id."""

from __future__ import annotations

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


def _expected(first: StepRecord, sightings: list[tuple[Any, ...]]) -> StepRecord:
    """DESIGN §3 rule 2, computed directly: the largest of each count, any modifier, the
    earliest timestamp; identity from the first sighting."""
    stamps = [v[9] for v in sightings if v[9] is not None]
    return StepRecord(
        first.message_id,
        first.session_id,
        first.model,
        first.source,
        *(max(v[i] for v in sightings) for i in range(6)),
        any(v[6] for v in sightings),
        any(v[7] for v in sightings),
        any(v[8] for v in sightings),
        min(stamps) if stamps else None,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELDS, min_size=2, max_size=5))
def test_merging_sightings_keeps_max_any_and_earliest(sightings: list[tuple[Any, ...]]) -> None:
    """Both ways of merging (a new record, or in place for a history scan) give the rule's
    result, whatever the order and values; the record merged from is left unchanged."""
    steps = [
        StepRecord(f"m{i}", f"s{i}", "claude-sonnet-4-5", "transcript", *v)
        for i, v in enumerate(sightings)
    ]
    want = _expected(steps[0], sightings)
    merged = steps[0]
    for step in steps[1:]:
        merged = merge_steps(merged, step)
    assert merged == want
    assert steps[0] == StepRecord("m0", "s0", "claude-sonnet-4-5", "transcript", *sightings[0])
    in_place = StepRecord(*steps[0].row())
    for step in steps[1:]:
        merge_into(in_place, step)
    assert in_place == want
