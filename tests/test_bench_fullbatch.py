"""The full-batch evaluation benchmark (``distlstm bench --sections fullbatch``) on a tiny problem."""

from __future__ import annotations

import pytest

from distlstm.bench.bptt import FloorRow, bench_fullbatch_evaluation, sigmoid_ns
from distlstm.bench.report import render_fullbatch
from distlstm.bptt.tasks import LongLagTask
from distlstm.models import peephole_kernel


def test_rows_ratios_and_floor():
    rows, floor = bench_fullbatch_evaluation(train_size=40, min_len=22, repeats=1)
    by_name = {r.name: r for r in rows}
    default = "one-node sequence, C++ loops (default)"
    if peephole_kernel.load() is not None:
        assert set(by_name) == {default, "one-node sequence, ATen loops (DISTLSTM_NATIVE=0)",
                                "generic loop (fused=False)"}
    else:
        default = "one-node sequence, ATen loops (default here: no C++ compiler)"
        assert set(by_name) == {default, "generic loop (fused=False)"}
    assert rows[0].name == default  # the floors are stated against the first row
    assert by_name["generic loop (fused=False)"].ratio == 1.0
    for row in rows:
        assert row.ratio == pytest.approx(row.ms / by_name["generic loop (fused=False)"].ms)
    steps = int(LongLagTask(train_size=40, test_size=1, min_len=22).full_batch().lengths.sum())  # Σ lengths
    assert floor.kept_mb == pytest.approx((3 + 1) * 4 * steps * 8 / 1e6)  # gates i, g, o and c; n = 4; float64
    assert floor.bandwidth_gbs > 0 and floor.sigmoid_ms > 0
    assert floor.sigmoids == (3 + 1) * 4 * steps
    text = render_fullbatch(rows, floor, train=40, min_len=22)
    assert f"| {default} |" in text and "Memory-traffic floor" in text
    assert "Compute floor" in text


def test_floor_is_one_write_and_one_read_at_the_bandwidth():
    assert FloorRow(kept_mb=100.0, bandwidth_gbs=10.0).floor_ms == pytest.approx(20.0)


def test_sigmoid_floor_is_count_times_rate():
    assert FloorRow(kept_mb=1.0, bandwidth_gbs=1.0, sigmoids=2_000_000, sigmoid_ns=1.5).sigmoid_ms == pytest.approx(3.0)
    assert sigmoid_ns(block=20_000, repeats=3) > 0  # σ costs ~10× a copy per value: far above the noise here
