"""Rule 3 arithmetic: whatever the arrival order, counters end at max(result, steps)."""

from __future__ import annotations

import itertools

from otel_claude.accounting import ModelState

# Steps of one call (input, output, cache_read, cache_5m, cache_1h, web_search) and its result
# (input, output, cache_read, cache_creation, web_search).
STEPS = [(10, 200, 400, 50, 100, 1), (5, 100, 300, 0, 20, 0), (1, 7, 0, 30, 0, 2)]
RESULT = (30, 250, 1000, 300, 3)
# Ground truth by hand: input max(30, 16) = 30; output max(250, 307) = 307;
# cache_read max(1000, 700) = 1000; cache creation total max(300, 80 + 120) = 300 of which
# the steps' 120 are 1h and the rest 180 are 5m; web search max(3, 3) = 3.
EXPECTED_FINAL = [30, 307, 1000, 180, 120, 3]


def _run(order: tuple[object, ...]) -> list[int]:
    state = ModelState()
    totals = [0] * 6
    for event in order:
        if event == "result":
            increments = state.raise_result(RESULT)
        else:
            assert isinstance(event, tuple)
            increments = state.add_steps(event)
        assert all(i >= 0 for i in increments), "a counter must never decrease"
        totals = [t + i for t, i in zip(totals, increments, strict=True)]
    return totals


def test_every_arrival_order_gives_the_same_totals() -> None:
    events: list[object] = [*STEPS, "result"]
    for order in itertools.permutations(events):
        totals = _run(order)
        # Token totals are exact in every order; the 5m/1h split is exact whenever the
        # 1h steps arrive before the result counted the whole cache total as 5m.
        assert totals[:3] == EXPECTED_FINAL[:3]
        assert totals[5] == EXPECTED_FINAL[5]
        assert totals[3] + totals[4] == 300
    assert _run((*STEPS, "result")) == EXPECTED_FINAL


def test_result_first_counts_unsplit_cache_as_5m_and_never_recounts() -> None:
    state = ModelState()
    assert state.raise_result((0, 0, 0, 100, 0)) == [0, 0, 0, 100, 0, 0]
    # A 1h step arriving afterwards cannot move tokens already counted as 5m.
    assert state.add_steps((0, 0, 0, 0, 50, 0)) == [0, 0, 0, 0, 0, 0]
    # Beyond the result total, the step's extra 1h tokens are counted.
    assert state.add_steps((0, 0, 0, 0, 80, 0)) == [0, 0, 0, 0, 30, 0]


def test_streaming_growth_then_result() -> None:
    state = ModelState()
    assert state.add_steps((3, 1, 0, 0, 0, 0)) == [3, 1, 0, 0, 0, 0]
    assert state.add_steps((0, 119, 0, 0, 0, 0)) == [0, 119, 0, 0, 0, 0]
    assert state.raise_result((3, 500, 0, 0, 0)) == [0, 380, 0, 0, 0, 0]
    assert state.raise_result((3, 500, 0, 0, 0)) == [0] * 6


def test_serialization_round_trip() -> None:
    state = ModelState()
    state.add_steps((1, 2, 3, 4, 5, 6))
    state.raise_result((7, 8, 9, 10, 11))
    again = ModelState.from_list(state.to_list())
    assert (again.steps, again.result, again.emitted) == (state.steps, state.result, state.emitted)
