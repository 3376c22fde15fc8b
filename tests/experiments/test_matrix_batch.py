"""The matrix-batch reproduction: aggregation, the run folder, and (slow) the quick preset's findings."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from distlstm.bptt.tasks import LongLagTask, mean_absolute_error
from distlstm.cli import main
from distlstm.experiments.matrix_batch import MatrixBatchConfig, aggregate, run
from distlstm.runs import load_checkpoint

KEYS = {"optimizer", "alpha", "runs", "successes", "median_seconds_to_success", "final_test_mae"}


def fake_run(optimizer, alpha, seed, seconds, mae):
    return {"optimizer": optimizer, "alpha": alpha, "seed": seed, "success": seconds is not None,
            "seconds_to_success": seconds, "samples_to_success": None if seconds is None else 1000 * seconds,
            "final_test_mae": mae}


def test_aggregate_counts_successes_and_takes_medians_of_successful_runs():
    cfg = MatrixBatchConfig(optimizers=("lbfgs", "momentum"), alphas=(3.75,))
    runs = [fake_run("lbfgs", 3.75, 0, 10.0, 0.009), fake_run("lbfgs", 3.75, 1, 30.0, 0.008),
            fake_run("lbfgs", 3.75, 2, None, 0.02), fake_run("momentum", 3.75, 0, None, 0.03)]
    lbfgs, sgd = aggregate(runs, cfg)
    assert (lbfgs["runs"], lbfgs["successes"], lbfgs["median_seconds_to_success"]) == (3, 2, 20.0)
    assert lbfgs["final_test_mae"] == 0.009 and lbfgs["final_test_mae_per_run"] == [0.009, 0.008, 0.02]
    assert (sgd["successes"], sgd["median_seconds_to_success"]) == (0, None)


def test_the_run_order_puts_the_long_runs_first():
    specs = MatrixBatchConfig(seeds=2, seeds_other_alpha=1).runs()
    assert len(specs) == 3 * 2 + 3 * 1
    assert specs[-2:] == [("lbfgs", 3.75, 0), ("lbfgs", 3.75, 1)]


@pytest.mark.multiprocess
def test_a_tiny_reproduction_writes_its_run_folder(tmp_path):
    cfg = replace(MatrixBatchConfig.preset(True), train_size=200, test_size=50, seconds=1.5,
                  optimizers=("lbfgs", "momentum"), worker_iterations=1)
    run(cfg, tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # the reported test MAE is the MAE of the saved model, recomputed here on the test split
    task = LongLagTask(min_len=cfg.min_len, train_size=cfg.train_size, test_size=cfg.test_size, hidden=cfg.hidden,
                       alpha=1.0, data_seed=0)
    for optimizer, row in zip(("lbfgs", "momentum"), summary[2:], strict=True):
        model = task.build_model(0)
        model.load_state_dict(load_checkpoint(tmp_path / f"runs/{optimizer}_alpha1_seed0/checkpoint.pt")["model"])
        assert row["final_test_mae"] == pytest.approx(mean_absolute_error(model, task.test), abs=1e-6)  # 6 places
    assert [(r["optimizer"], r["alpha"]) for r in summary] == [("lbfgs", 3.75), ("momentum", 3.75), ("lbfgs", 1.0),
                                                                ("momentum", 1.0)]
    assert all(set(r) >= KEYS and r["runs"] == 1 for r in summary)
    report = (tmp_path / "report.md").read_text()
    assert "## Against the paper" in report and "| 2 workers × 1 thread |" in report
    for name in ("test_mae_alpha3.75.png", "test_mae_alpha1.png", "details.json",
                 "runs/lbfgs_alpha1_seed0/metrics.csv"):
        assert (tmp_path / name).exists()


@pytest.mark.slow
def test_quick_reproduction_from_the_command_line(tmp_path):
    assert main(["reproduce", "matrix-batch", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = {(r["optimizer"], r["alpha"]): r for r in json.loads((tmp_path / "summary.json").read_text())}
    assert len(rows) == 6 and all(set(r) >= KEYS for r in rows.values())
    # the paper's main finding at the quick size: full-batch L-BFGS with sharpened gates reaches the target
    assert rows[("lbfgs", 3.75)]["successes"] == 1
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["vectorization"][0]["speedup"] > 10  # matrix-batched far faster than looping
