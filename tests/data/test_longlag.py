"""The long-lag tasks match their definition, checked sequence by sequence."""

from __future__ import annotations

import pytest
import torch

from distlstm.data.longlag import adding_problem, multiplication_problem


@pytest.mark.parametrize("multiply", [False, True])
def test_sequences_follow_the_definition(multiply):
    make = multiplication_problem if multiply else adding_problem
    data = make(300, 100, torch.Generator().manual_seed(0))
    assert data.x.shape[0] == 300 and data.x.shape[2] == 2 and data.x.dtype == torch.float64
    for b in range(300):
        m = int(data.lengths[b])
        assert 100 <= m <= 110
        values, markers = data.x[b, :m, 0], data.x[b, :m, 1]
        assert torch.all(data.x[b, m:] == 0)
        marked = torch.nonzero(markers == 1).flatten().tolist()  # in position order
        assert len(marked) == 2 and marked[0] < 10 and marked[1] < 100 // 2  # one of the first ten; T/2 − 1 others
        unmarked_ends = [i for i in (0, m - 1) if i not in marked]
        assert all(markers[i] == -1 for i in unmarked_ends)
        assert int((markers != 0).sum()) == 2 + len(unmarked_ends)
        x1, x2 = (0.0 if i == 0 else float(values[i]) for i in marked)  # the target is symmetric in X1, X2
        expected = x1 * x2 if multiply else 0.5 + (x1 + x2) / 4
        assert float(data.y[b]) == pytest.approx(expected, abs=1e-15)
        low = 0.0 if multiply else -1.0
        assert float(values.min()) >= low and float(values.max()) <= 1.0
    assert float(data.y.min()) >= 0.0 and float(data.y.max()) <= 1.0


def test_reproducible_and_shardable():
    a = adding_problem(40, 30, torch.Generator().manual_seed(5))
    b = adding_problem(40, 30, torch.Generator().manual_seed(5))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    parts = [a.shard(r, 4) for r in range(4)]
    assert torch.equal(torch.cat([p.y for p in parts]), a.y) and len(parts[2]) == 10
    uneven = [a.shard(r, 3) for r in range(3)]  # 13, 13, 14 rows: every row once, in order
    assert [len(p) for p in uneven] == [13, 13, 14] and torch.equal(torch.cat([p.y for p in uneven]), a.y)
    with pytest.raises(ValueError, match="cannot be split over 41 workers"):
        a.shard(0, 41)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_len must be at least 22"):
        adding_problem(5, 10, torch.Generator())
    with pytest.raises(ValueError, match="at least one sample"):
        multiplication_problem(0, 100, torch.Generator())
