"""``compare``: interleaved rounds whose first candidate rotates."""

from __future__ import annotations

import pytest

from distlstm.timing import compare


def test_every_candidate_leads_a_round_and_follows_each_other():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = compare(fns, repeats=6, warmup=1)
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())
    rounds = [calls[3 + 3 * r : 6 + 3 * r] for r in range(6)]  # after one warm-up call each
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert {(r[i], r[i + 1]) for r in rounds for i in range(2)} >= {("a", "b"), ("b", "c"), ("c", "a")}


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats"):
        compare({"a": lambda: None}, repeats=0)
