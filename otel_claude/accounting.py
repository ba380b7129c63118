"""The arithmetic of DESIGN §3 rule 3: steps, result totals, and what has been counted.

Per call (one ``query()``), model and field the true value is ``max(result total, sum of the
call's steps)``; counters only ever receive the increase of that value. Steps and results may
arrive in any order, and a step may grow (streaming ``output_tokens``), so the state keeps
three vectors per model and derives increments from them:

* ``steps``   — sums of the call's deduplicated steps (fields: input, output, cache_read,
  cache_5m, cache_1h, web_search);
* ``result``  — the result's ``modelUsage`` (input, output, cache_read, cache_creation unsplit,
  web_search);
* ``emitted`` — what has been added to the counters so far (same fields as ``steps``).

Results do not split cache writes by TTL, so for cache creation the target is the total
``max(result, steps_5m + steps_1h)``: 1h writes are counted as the steps report them and the
remainder is 5m (rule 4). If a result already counted a total as 5m before 1h steps arrived,
the total stays exact and the split keeps what was already counted (counters cannot go down).
"""

from __future__ import annotations

FIELD_COUNT = 6  # input, output, cache_read, cache_5m, cache_1h, web_search
RESULT_FIELD_COUNT = 5  # input, output, cache_read, cache_creation, web_search

_IN, _OUT, _READ, _C5M, _C1H, _WEB = range(FIELD_COUNT)
_R_IN, _R_OUT, _R_READ, _R_CC, _R_WEB = range(RESULT_FIELD_COUNT)


class ModelState:
    """Steps, result totals and emitted counts of one model within one call."""

    __slots__ = ("emitted", "result", "steps")

    def __init__(
        self,
        steps: list[int] | None = None,
        result: list[int] | None = None,
        emitted: list[int] | None = None,
    ) -> None:
        self.steps = steps if steps is not None else [0] * FIELD_COUNT
        self.result = result if result is not None else [0] * RESULT_FIELD_COUNT
        self.emitted = emitted if emitted is not None else [0] * FIELD_COUNT

    def to_list(self) -> list[int]:
        """Serialize as one flat list (steps + result + emitted) for the ledger."""
        return [*self.steps, *self.result, *self.emitted]

    @classmethod
    def from_list(cls, values: list[int]) -> ModelState:
        """Inverse of ``to_list``."""
        s, r = FIELD_COUNT, FIELD_COUNT + RESULT_FIELD_COUNT
        return cls(list(values[:s]), list(values[s:r]), list(values[r:]))

    def add_steps(self, deltas: tuple[int, ...] | list[int]) -> list[int]:
        """Add step deltas; return the counter increments they cause."""
        for i, d in enumerate(deltas):
            self.steps[i] += d
        return self._advance()

    def add_plain_steps(self, deltas: tuple[int, ...] | list[int]) -> bool:
        """Add step deltas when no result was ever raised; False (nothing changed) otherwise.

        Without a result every counted value is the step sum itself (``emitted`` equals
        ``steps`` field by field), so the increments are exactly ``deltas`` and the caller
        may emit them without ``_advance`` and sum them with other steps first.
        """
        if any(self.result):
            return False
        steps, emitted = self.steps, self.emitted
        for i, d in enumerate(deltas):
            steps[i] += d
            emitted[i] += d
        return True

    def raise_result(self, totals: tuple[int, ...]) -> list[int]:
        """Raise result totals to ``totals`` (element-wise max); return counter increments."""
        for i, v in enumerate(totals):
            if v > self.result[i]:
                self.result[i] = v
        return self._advance()

    def _advance(self) -> list[int]:
        s, r, e = self.steps, self.result, self.emitted
        new = list(e)
        for i, ri in ((_IN, _R_IN), (_OUT, _R_OUT), (_READ, _R_READ), (_WEB, _R_WEB)):
            new[i] = max(e[i], s[i], r[ri])
        total_cc = max(r[_R_CC], s[_C5M] + s[_C1H], e[_C5M] + e[_C1H])
        new[_C1H] = max(e[_C1H], min(s[_C1H], total_cc - e[_C5M]))
        new[_C5M] = max(e[_C5M], total_cc - new[_C1H])
        increments = [n - o for n, o in zip(new, e, strict=True)]
        self.emitted = new
        return increments
