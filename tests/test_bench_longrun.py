"""The longrun benchmark section: memory marks, checkpoint sizes per mode and the checkpoint_every overhead."""

from __future__ import annotations

import pytest

from distlstm.bench.report import run
from distlstm.bench.robust import bench_checkpoint_every, bench_checkpoints, bench_memory, render_robust


@pytest.mark.slow  # about 20 s idle: the reproductions' DPF has 500 particles per node
def test_longrun_pieces_on_tiny_sizes():
    memory = bench_memory((20, 40))
    assert [(r.keep_steps, r.step) for r in memory] == [(False, 20), (False, 40), (True, 20), (True, 40)]
    assert memory[0].growth_mib == 0.0 and all(r.rss_mib > 0 for r in memory)
    checkpoints = bench_checkpoints(steps=1, repeats=1, which=("online",))
    assert [r.what.split(",")[0] for r in checkpoints] == ["dekf", "dpf"]
    dekf, dpf = checkpoints
    n = 116  # hidden 4, one input: the 4 nodes' Σ (n × n, float64) dominate the DEKF checkpoint
    assert 4 * n * n * 8 / 1e6 < dekf.megabytes < 2 * 4 * n * n * 8 / 1e6
    assert dpf.megabytes > 4 * 500 * n * 8 / 1e6  # 500 particles of n_θ per node
    overhead = bench_checkpoint_every(20, (5,))
    assert [r.every for r in overhead] == [None, 5] and overhead[0].ratio == 1.0
    text = render_robust(memory, checkpoints, overhead, 20, repeats=1)
    assert "| no (streamed) | 40 |" in text and "| dekf, 4 nodes, n_θ = 116 |" in text and "| 5 |" in text


@pytest.mark.slow
def test_longrun_section_of_the_report(tmp_path):
    text = run(tmp_path / "B.md", quick=True, repeats=1, sections=("longrun",))
    assert "## Long online runs and checkpoints" in text and "--sections longrun" in text
    assert "| fullbatch |" in text and "| end only |" in text
