"""The word-LM benchmark runs at tiny sizes and renders its table."""

from distlstm.bench.lm import bench_lm, render_lm
from distlstm.bench.report import run


def test_bench_lm_times_every_model_against_lstmp_at_tiny_sizes() -> None:
    rows = bench_lm(((8, 64),), batch=2, window=3, vocab=50, samples=10, repeats=1)
    assert [r.model for r in rows] == ["LSTMP", "F-LSTM", "G-2", "G-4", "G-8", "G4-G8"]
    assert rows[0].ratio == 1.0 and all(r.words_per_second > 0 for r in rows)
    params = {r.model: r.rnn_parameters for r in rows}
    assert params["LSTMP"] > params["G-2"] > params["G-4"] > params["G4-G8"] > params["G-8"]
    assert rows[1].paper_ratio is not None and abs(rows[1].paper_ratio - 56.5 / 33.8) < 1e-9
    text = render_lm(rows, batch=2, window=3, vocab=50, samples=10)
    assert text.count("\n| 8 | 64 |") == 6 and "| 1.67 |" in text


def test_bench_report_has_the_lm_section(tmp_path) -> None:
    text = run(tmp_path / "B.md", quick=True, repeats=1, sections=("lm",))
    assert "## Word language models" in text and "--sections lm" in text
    assert (tmp_path / "B.md").read_text() == text
