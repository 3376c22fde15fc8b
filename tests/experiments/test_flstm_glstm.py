"""The F-LSTM / G-LSTM reproduction: run specs, aggregation, verdicts, parameter counts, a tiny run folder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from distlstm.cli import main
from distlstm.experiments.flstm_glstm import (
    PAPER,
    FLSTMGLSTMConfig,
    aggregate,
    evaluation_curve,
    findings,
    mean_ci,
    paper_rnn_parameters,
    run,
    train_args,
)


def fake(model: str, seed: int, val: float, steps: int, params: int, curve_val: float) -> dict:
    return {"model": model, "workers": 1, "seed": seed, "steps": steps, "seconds": 60.0,
            "words_per_second": steps * 10.0, "rnn_parameters": params, "parameters": params + 100,
            "val_perplexity": val, "test_perplexity": val + 1,
            "curve": [(50, 5.0, 6.0, 6.5), (100, 10.0, 5.0, curve_val)]}


def test_runs_cover_every_model_and_worker_setting() -> None:
    cfg = FLSTMGLSTMConfig(seeds=2, two_worker_models=("LSTMP",))
    specs = cfg.runs()
    assert len(specs) == 6 * 2 + 1 and specs[-1] == ("LSTMP", 2, 0)
    args = train_args(cfg, "G4-G8", 3)
    assert args[args.index("--cell-opt") + 1] == "groups=4,8" and args[args.index("--seed") + 1] == "3"
    assert "rank=64" in train_args(cfg, "F-LSTM", 0)  # r = p/2
    with pytest.raises(ValueError, match="unknown model 'G-3'"):
        cfg.cell("G-3")


def test_our_cells_have_table_1_rnn_parameter_counts() -> None:
    for model in ("LSTMP", "F-LSTM", "G-2", "G-4", "G-8"):
        assert paper_rnn_parameters(model) == PAPER[model][2]
    assert paper_rnn_parameters("G4-G8") < paper_rnn_parameters("G-4")


def test_mean_ci_is_the_t_interval() -> None:
    mean, ci = mean_ci([1.0, 3.0])
    assert mean == 2.0 and ci == pytest.approx(12.706 * 1.41421356 / 1.41421356, rel=1e-3)
    assert mean_ci([4.0]) == (4.0, None)


def test_aggregate_and_verdicts_follow_the_numbers() -> None:
    cfg = FLSTMGLSTMConfig(models=("LSTMP", "G-2", "G-4", "G4-G8"), seeds=2, eval_every=50)
    runs = []
    for seed in (0, 1):
        runs += [fake("LSTMP", seed, 100.0 + seed, 100, 1000, 4.0),  # best at equal steps
                 fake("G-2", seed, 102.0 + seed, 150, 550, 4.5),  # 2% behind with 0.55× the parameters
                 fake("G-4", seed, 90.0 + seed * 0.1, 200, 400, 4.8),  # clearly ahead at equal time
                 fake("G4-G8", seed, 91.0 + seed * 0.1, 210, 300, 4.9)]
    summary = aggregate(runs, cfg)
    by = {r["model"]: r for r in summary}
    assert by["LSTMP"]["val_perplexity"] == 100.5 and by["LSTMP"]["val_perplexity_per_run"] == [100.0, 101.0]
    text = "\n".join(findings(cfg, summary, runs))
    assert "step 100" in text and "lowest: LSTMP — agrees" in text
    assert "At equal time G-4 catches up or wins*: validation perplexity 90.0" in text
    g4_line = next(line for line in text.splitlines() if "equal time G-4" in line)
    assert "— wins" in g4_line
    g2_line = next(line for line in text.splitlines() if "G-2 reaches about the baseline" in line)
    assert "+2.0%" in g2_line and "agrees" in g2_line
    assert "G4-G8 ≈ G-4" in text and "+1.1%" in text


@pytest.mark.multiprocess
def test_a_tiny_reproduction_writes_its_run_folder(tmp_path) -> None:
    cfg = replace(FLSTMGLSTMConfig.preset(True), proj=8, hidden=64, streams=2, window=5, samples=32, vocab=300,
                  seconds=1.0, eval_every=5, eval_tokens=100, final_tokens=300, models=("LSTMP", "G-2"),
                  two_worker_models=("G-2",))
    summary = run(cfg, tmp_path, show_progress=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert [(r["model"], r["workers"]) for r in summary] == [("LSTMP", 1), ("G-2", 1), ("G-2", 2)]
    report = (tmp_path / "report.md").read_text()
    assert "## Against the paper" in report and "| G-2 | 2 | 1 |" in report and "83,951,616" in report
    for name in ("loss_vs_step.png", "loss_vs_time.png", "val_vs_time.png", "runs.csv",
                 "runs/G-2_w2_seed0/metrics.csv", "runs/LSTMP_w1_seed0/checkpoint.pt"):
        assert (tmp_path / name).exists()


@pytest.mark.slow
def test_quick_reproduction_from_the_command_line(tmp_path) -> None:
    assert main(["reproduce", "flstm-glstm", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert {r["model"] for r in rows} == {"LSTMP", "F-LSTM", "G-2", "G-4", "G-8", "G4-G8"}
    assert all(1 < r["val_perplexity"] < 10_000 for r in rows)


def test_the_curve_averages_the_training_loss_between_evaluations() -> None:
    nan = float("nan")
    rows = [{"step": 1.0, "seconds": 0.1, "train_loss": 6.0, "val_nats_per_word": nan},
            {"step": 2.0, "seconds": 0.2, "train_loss": 4.0, "val_nats_per_word": 5.5},
            {"step": 3.0, "seconds": 0.3, "train_loss": 3.0, "val_nats_per_word": 5.0}]
    assert evaluation_curve(rows, "val_nats_per_word") == [(2.0, 0.2, 5.0, 5.5), (3.0, 0.3, 3.0, 5.0)]
