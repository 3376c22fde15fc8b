"""The matrix-batch reproduction: aggregation, the run folder, and (slow) the quick preset's findings."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace

import pytest
import torch
from scipy.optimize import minimize

from distlstm.bptt.fullbatch import FullBatchObjective, cg_iteration, cg_start
from distlstm.bptt.tasks import LongLagTask, mean_absolute_error
from distlstm.cli import main
from distlstm.experiments.matrix_batch import (
    MatrixBatchConfig,
    aggregate,
    combine,
    optimizer_findings,
    run,
    run_fullbatch,
    runs_from_folders,
)
from distlstm.modes import load_run

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


@pytest.mark.parametrize(("sgd_seconds", "verdict"), [(300.0, "agrees"), (5.0, "disagrees"),
                                                     (25.0, "agrees for some: CG (Polak–Ribière+) not")])
def test_equal_success_counts_are_decided_by_the_time_to_success(sgd_seconds, verdict):
    """Batch optimizers and momentum SGD with as many successes: the finding names every median and follows them,
    optimizer by optimizer."""
    cfg = MatrixBatchConfig(optimizers=("lbfgs", "cg", "momentum"), alphas=(3.75,))
    runs = [fake_run("lbfgs", 3.75, 0, 20.0, 0.009), fake_run("cg", 3.75, 0, 30.0, 0.009),
            fake_run("momentum", 3.75, 0, sgd_seconds, 0.009)]
    by = {(r["optimizer"], r["alpha"]): r for r in aggregate(runs, cfg)}
    line = next(f for f in optimizer_findings(cfg, by) if "faster than momentum" in f)
    assert line.endswith(f"momentum SGD 1/1 in {sgd_seconds:.0f} s against L-BFGS 1/1 in 20 s, CG (Polak–Ribière+) "
                         f"1/1 in 30 s — {verdict}.")


def test_more_successes_learn_faster_whatever_the_time():
    cfg = MatrixBatchConfig(optimizers=("lbfgs", "momentum"), alphas=(3.75,))
    runs = [fake_run("lbfgs", 3.75, 0, 200.0, 0.009), fake_run("lbfgs", 3.75, 1, 300.0, 0.009),
            fake_run("momentum", 3.75, 0, 5.0, 0.009), fake_run("momentum", 3.75, 1, None, 0.17)]
    by = {(r["optimizer"], r["alpha"]): r for r in aggregate(runs, cfg)}
    line = next(f for f in optimizer_findings(cfg, by) if "faster than momentum" in f)
    assert line.endswith("momentum SGD 1/2 in 5 s against L-BFGS 2/2 in 250 s — agrees.")


def test_the_run_order_puts_the_long_runs_first():
    specs = MatrixBatchConfig(seeds=2, seeds_other_alpha=1).runs()
    assert len(specs) == 3 * 2 + 3 * 1
    assert specs[-2:] == [("lbfgs", 3.75, 0), ("lbfgs", 3.75, 1)]


def reference_objective(task: LongLagTask, seed: int):
    """The paper's full-batch objective written out: Σ (d̂ − d)² / N over the whole training set."""
    model = task.build_model(seed)
    data = task.train
    return model, FullBatchObjective(model, lambda: ((model(data.x, data.lengths) - data.y) ** 2).sum() / len(data))


@pytest.mark.parametrize(("optimizer", "steps"), [("lbfgs", 3), ("cg", 10)])
def test_full_batch_runs_take_the_reference_optimizers_steps(optimizer, steps):
    """The reproduction's L-BFGS / CG runs equal torch's LBFGS and SciPy's CG driven directly, bit for bit (L-BFGS
    with a history of 2 pairs, so that a run which dropped the setting would take other steps)."""
    cfg = replace(MatrixBatchConfig.preset(True), train_size=100, test_size=30, seconds=1e9, lbfgs_history=2)
    task = LongLagTask(min_len=cfg.min_len, train_size=cfg.train_size, test_size=cfg.test_size, hidden=cfg.hidden,
                       alpha=3.75, data_seed=1)
    summary, rows = run_fullbatch(cfg, task, optimizer, seed=1, out=None, steps=steps)
    model, reference = reference_objective(task, seed=1)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(reference.params, max_iter=cfg.lbfgs_max_iter, history_size=cfg.lbfgs_history,
                                tolerance_change=cfg.lbfgs_tolerance, line_search_fn="strong_wolfe")
        for _ in range(steps):
            opt.step(reference.closure)
    else:
        x0 = reference.theta().numpy()
        res = minimize(reference.value_and_grad, x0, jac=True, method="CG",
                       options={"maxiter": steps, "gtol": 0.0, "c2": 0.1})
        reference.set_theta(torch.from_numpy(res.x))
        assert rows[-1]["train_loss"] == res.fun
    assert summary["steps"] == steps and summary["test_mae"] == mean_absolute_error(model, task.test)
    assert rows[-1]["evaluations"] == reference.evaluations


def test_the_hestenes_stiefel_runs_take_its_cg_steps():
    """The reproduction's "cg-hs" optimizer is cg_iteration with update="hs", driven directly, bit for bit."""
    cfg = replace(MatrixBatchConfig.preset(True), train_size=100, test_size=30, seconds=1e9)
    task = LongLagTask(min_len=cfg.min_len, train_size=cfg.train_size, test_size=cfg.test_size, hidden=cfg.hidden,
                       alpha=3.75, data_seed=1)
    _, rows = run_fullbatch(cfg, task, "cg-hs", seed=1, out=None, steps=6)
    _, reference = reference_objective(task, seed=1)
    state = cg_start(reference.theta().numpy(), reference.value_and_grad)
    for _ in range(6):
        nxt = cg_iteration(state, reference.value_and_grad, 0.1, update="hs")
        assert nxt is not None
        state = nxt
    assert rows[-1]["train_loss"] == state.f and rows[-1]["evaluations"] == reference.evaluations


@pytest.mark.multiprocess
def test_a_tiny_reproduction_writes_its_run_folder(tmp_path):
    cfg = replace(MatrixBatchConfig.preset(True), train_size=200, test_size=50, seconds=1.5,
                  optimizers=("lbfgs", "momentum"), worker_iterations=1)
    run(cfg, tmp_path, show_progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # the reported test MAE is the MAE of the saved model, recomputed here on the test split
    task = LongLagTask(min_len=cfg.min_len, train_size=cfg.train_size, test_size=cfg.test_size, hidden=cfg.hidden,
                       alpha=1.0, data_seed=0)
    lbfgs = load_run(tmp_path / "runs/lbfgs_alpha1_seed0").model
    assert summary[2]["final_test_mae"] == mean_absolute_error(lbfgs, task.test)
    momentum = load_run(tmp_path / "runs/momentum_alpha1_seed0").model
    assert summary[3]["final_test_mae"] == pytest.approx(mean_absolute_error(momentum, task.test), abs=1e-6)
    assert [(r["optimizer"], r["alpha"]) for r in summary] == [("lbfgs", 3.75), ("momentum", 3.75), ("lbfgs", 1.0),
                                                                ("momentum", 1.0)]
    assert all(set(r) >= KEYS and r["runs"] == 1 for r in summary)
    report = (tmp_path / "report.md").read_text()
    assert "## Against the paper" in report and "| 2 workers × 1 thread |" in report
    for name in ("test_mae_alpha3.75.png", "test_mae_alpha1.png", "details.json",
                 "runs/lbfgs_alpha1_seed0/metrics.csv"):
        assert (tmp_path / name).exists()
    # the report can be rebuilt from the run folders alone (an interrupted reproduction, folders from elsewhere)
    again = runs_from_folders(cfg, tmp_path)
    details = json.loads((tmp_path / "details.json").read_text())
    key = ("optimizer", "alpha", "seed")
    assert sorted(({k: v for k, v in r.items() if k != "curve"} for r in again), key=lambda r: [r[k] for k in key]) \
        == sorted(details["runs"], key=lambda r: [r[k] for k in key])
    assert aggregate(again, cfg) == summary
    (tmp_path / "runs/momentum_alpha1_seed0/summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="momentum_alpha1_seed0 holds no finished run"):
        runs_from_folders(cfg, tmp_path)


@pytest.mark.slow
def test_quick_reproduction_from_the_command_line(tmp_path):
    assert main(["reproduce", "matrix-batch", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = {(r["optimizer"], r["alpha"]): r for r in json.loads((tmp_path / "summary.json").read_text())}
    assert len(rows) == 6 and all(set(r) >= KEYS for r in rows.values())
    # the paper's main finding at the quick size: full-batch L-BFGS with sharpened gates reaches the target
    assert rows[("lbfgs", 3.75)]["successes"] == 1
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["vectorization"][0]["speedup"] > 10  # matrix-batched far faster than looping


def test_seeds_sets_the_runs_per_optimizer():
    cfg = MatrixBatchConfig.preset(False, seeds=15)
    runs = cfg.runs()
    assert sum(1 for opt, a, _ in runs if opt == "lbfgs" and a == 3.75) == 15
    assert sum(1 for opt, a, _ in runs if opt == "cg" and a == 1.0) == 5
    assert MatrixBatchConfig.preset(False).seeds == 3


@pytest.mark.parametrize(("flag", "jobs"), [([], 2), (["--jobs", "5"], 5), (["--jobs", "0"], None)])
def test_jobs_sets_the_runs_at_a_time(tmp_path, monkeypatch, flag, jobs):
    from distlstm.experiments import matrix_batch

    seen: list[MatrixBatchConfig] = []
    monkeypatch.setattr(matrix_batch, "run", lambda cfg, out, show_progress: seen.append(cfg) or [])
    assert main(["reproduce", "matrix-batch", "--out", str(tmp_path), "--no-progress", *flag]) == 0
    assert seen[0].jobs == (jobs or (os.cpu_count() or 1))


def reproduction_folder(folder, cfg, runs):
    """A finished reproduction as ``combine`` reads it: config.json and details.json (fake runs)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(asdict(cfg)))
    rows = [r | {"seconds": r["seconds_to_success"] or cfg.seconds, "samples": 1000,
                 "status": "target reached" if r["success"] else "time budget used"} for r in runs]
    (folder / "details.json").write_text(json.dumps({"runs": rows}))


def test_combine_makes_one_table_from_several_reproductions(tmp_path):
    """Runs made one optimizer at a time give the table one reproduction of all of them would."""
    cfg = MatrixBatchConfig.preset(False, seeds=2)
    lbfgs = [fake_run("lbfgs", 3.75, 0, 10.0, 0.009), fake_run("lbfgs", 3.75, 1, None, 0.02),
             fake_run("lbfgs", 1.0, 0, 50.0, 0.0099)]
    sgd = [fake_run("momentum", 3.75, 0, None, 0.17), fake_run("momentum", 3.75, 1, 300.0, 0.0098)]
    reproduction_folder(tmp_path / "a", replace(cfg, optimizers=("lbfgs",)), lbfgs)
    reproduction_folder(tmp_path / "b", replace(cfg, optimizers=("momentum",), alphas=(3.75,)), sgd)
    rows = combine([tmp_path / "a", tmp_path / "b"], tmp_path / "all")
    whole = aggregate(lbfgs + sgd, replace(cfg, optimizers=("lbfgs", "momentum")))
    assert rows == [r for r in whole if r["runs"]]  # momentum at α 1 was not run: no row
    assert [(r["optimizer"], r["alpha"], r["successes"], r["runs"]) for r in rows] == [
        ("lbfgs", 3.75, 1, 2), ("momentum", 3.75, 1, 2), ("lbfgs", 1.0, 1, 1)]
    assert json.loads((tmp_path / "all/summary.json").read_text()) == rows
    report = (tmp_path / "all/report.md").read_text()
    assert "| momentum SGD | 3.75 | 1 / 2 | 300 |" in report
    assert "[`../a`](../a/report.md): L-BFGS at α = 3.75 (2 runs), L-BFGS at α = 1 (1 runs)" in report
    assert "momentum SGD, α = 3.75, seed 1: 0.0098 (success after 300 s" in report


def test_combine_refuses_other_protocols_and_repeated_runs(tmp_path):
    cfg = MatrixBatchConfig.preset(False)
    reproduction_folder(tmp_path / "a", cfg, [fake_run("lbfgs", 3.75, 0, 10.0, 0.009)])
    reproduction_folder(tmp_path / "short", replace(cfg, seconds=60.0), [fake_run("cg", 3.75, 0, None, 0.1)])
    reproduction_folder(tmp_path / "again", cfg, [fake_run("lbfgs", 3.75, 0, 12.0, 0.009)])
    with pytest.raises(ValueError, match=r"another protocol.*seconds 60\.0 against 450\.0"):
        combine([tmp_path / "a", tmp_path / "short"], tmp_path / "out")
    with pytest.raises(ValueError, match=r"repeats the run \('lbfgs', 3.75, 0\)"):
        combine([tmp_path / "a", tmp_path / "again"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        combine([tmp_path / "a", tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="at least one"):
        combine([], tmp_path / "out")


def test_combine_holds_lbfgs_runs_to_one_tolerance_and_history(tmp_path):
    """Only folders with L-BFGS runs must agree on its tolerance and history; a folder written before config.json
    recorded them ran torch's tolerance and 50 pairs."""
    cfg = MatrixBatchConfig.preset(False)
    reproduction_folder(tmp_path / "new", replace(cfg, optimizers=("lbfgs",)), [fake_run("lbfgs", 3.75, 0, 10.0,
                                                                                          0.009)])
    old = replace(cfg, optimizers=("lbfgs",), lbfgs_tolerance=1e-9, lbfgs_history=50)
    reproduction_folder(tmp_path / "old", old, [fake_run("lbfgs", 3.75, 1, 10.0, 0.009)])
    config = json.loads((tmp_path / "old/config.json").read_text())
    del config["lbfgs_tolerance"], config["lbfgs_history"]
    (tmp_path / "old/config.json").write_text(json.dumps(config))
    reproduction_folder(tmp_path / "cg", replace(cfg, optimizers=("cg",), lbfgs_tolerance=1e-9),
                        [fake_run("cg", 3.75, 0, None, 0.1)])
    with pytest.raises(ValueError, match=r"lbfgs_tolerance 1e-09 against 1e-14 \(L-BFGS runs\); "
                                         r"lbfgs_history 50 against 100 \(L-BFGS runs\)"):
        combine([tmp_path / "new", tmp_path / "old"], tmp_path / "out")
    combine([tmp_path / "cg", tmp_path / "new"], tmp_path / "out")  # CG runs do not use it
    assert "history 100, tolerance on changes of L and θ 1e-14" in (tmp_path / "out/report.md").read_text()
    combine([tmp_path / "cg", tmp_path / "old"], tmp_path / "out2")
    assert "history 50, tolerance on changes of L and θ 1e-09" in (tmp_path / "out2/report.md").read_text()


def test_combine_holds_every_run_to_one_initialisation(tmp_path):
    """The initialisation is part of the protocol; a folder written before config.json recorded it used PyTorch's
    uniform start, and the report names the start it used."""
    cfg = MatrixBatchConfig.preset(False)
    reproduction_folder(tmp_path / "new", replace(cfg, optimizers=("cg",)), [fake_run("cg", 3.75, 0, 10.0, 0.009)])
    reproduction_folder(tmp_path / "old", replace(cfg, optimizers=("momentum",), init="uniform"),
                        [fake_run("momentum", 3.75, 0, None, 0.1)])
    config = json.loads((tmp_path / "old/config.json").read_text())
    del config["init"]
    (tmp_path / "old/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"init 'uniform' against 'sparse'"):
        combine([tmp_path / "new", tmp_path / "old"], tmp_path / "out")
    combine([tmp_path / "old"], tmp_path / "out")
    assert "initial weights (PyTorch's uniform ±1/√n)" in (tmp_path / "out/report.md").read_text()
    combine([tmp_path / "new"], tmp_path / "out2")
    assert "input-gate bias −1" in (tmp_path / "out2/report.md").read_text()


def test_an_unknown_initialisation_is_refused_before_any_run():
    with pytest.raises(ValueError, match=r"unknown initialisation 'xavier'; expected one of \('sparse', 'uniform'\)"):
        MatrixBatchConfig(init="xavier")
