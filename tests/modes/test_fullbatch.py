"""The fullbatch mode in the run loop: resume bit for bit, any regression task, workers, a clean end, bad input."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.bptt.table_task import TableTask
from distlstm.bptt.tasks import CharStreamTask, LongLagTask
from distlstm.cli_runs import RunCommand, add_run_command, run_command
from distlstm.modes import load_run
from distlstm.modes.fullbatch import FullBatchConfig, FullBatchMode
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.config import LoopConfig, flag
from distlstm.runs.loop import run
from distlstm.runs.metrics import read_metrics
from tests.bptt.test_table_task import table


def adding(rank: int = 0, world: int = 1) -> LongLagTask:
    return LongLagTask(rank=rank, world_size=world, problem="adding", min_len=24, train_size=64, test_size=16)


def csv_task(path: Path):
    data = table(path)

    def make(rank: int, world: int) -> TableTask:
        return TableTask(data=data, target="y", inputs=("a", "b"), rank=rank, world_size=world, window=4, hidden=6)

    return make


def loop(steps: int, **kw) -> LoopConfig:
    return LoopConfig(steps=steps, eval_every=2, checkpoint_every=3, progress=False, **kw)


def go(make, method: str, steps: int, folder=None, **kw):
    return run(FullBatchMode(make, FullBatchConfig(method=method, max_iter=3)), loop(steps), folder=folder, **kw)


def same_state(a, b) -> None:
    """Every tensor of two state dicts equal (torch.equal), every other value equal."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same_state(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same_state(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("method", ["lbfgs", "cg"])
@pytest.mark.parametrize("task", ["adding", "csv"])
def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path, method, task):
    make = (lambda r, w: adding(r, w)) if task == "adding" else csv_task(tmp_path / "t.csv")
    steps, stop = (5, 2) if method == "lbfgs" else (8, 4)  # stop on an evaluation step: the same rows
    whole = go(make, method, steps, tmp_path / "whole")
    part = go(make, method, stop, tmp_path / "part")
    assert part.summary["steps"] == stop
    rest = go(make, method, steps, tmp_path / "part", resume=True)
    a, _ = load_run_checkpoint(tmp_path / "whole", "fullbatch")
    b, _ = load_run_checkpoint(tmp_path / "part", "fullbatch")
    assert a["step"] == b["step"] == steps
    same_state(a["state"], b["state"])  # model, L-BFGS history or CG state, evaluation counter
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rest.rows]
    assert whole.rows[-1]["evaluations"] > steps  # line-search evaluations are counted
    assert rest.summary["evaluations"] == whole.summary["evaluations"]


@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_a_regression_csv_learns_and_loads_back(tmp_path, method):
    make = csv_task(tmp_path / "t.csv")
    result = go(make, method, 6 if method == "lbfgs" else 25, tmp_path / "r")
    assert result.summary["test_mse"] < 0.25 * result.summary["test_mse_mean_predictor"]
    loaded = load_run(tmp_path / "r")
    assert loaded.mode == "fullbatch" and loaded.step == result.summary["steps"]
    task = make(0, 1)
    assert task.evaluate(loaded.model) == result.summary["test_mse"]  # the stored model is the evaluated one
    # forecasts of the same table from the stored scaler, in y's units: the test windows give the run's test MSE
    rows = loaded.forecaster(tmp_path / "t.csv")
    test = rows[-len(task.test):]
    mse = sum((r["prediction"] - r["target"]) ** 2 for r in test) / len(test)
    assert mse == pytest.approx(result.summary["test_mse"], rel=1e-9)
    assert rows[0]["row"] == 6 and rows[0]["lower"] is None  # header on line 1; the first label is row 4 + 1
    (tmp_path / "other.csv").write_text("a,y\n" + "1,2\n" * 10)
    with pytest.raises(ValueError, match=r"has 2 column\(s\); the model was trained on a table of 3"):
        loaded.forecaster(tmp_path / "other.csv")


@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_a_step_without_progress_ends_the_run_cleanly(method):
    class Uphill(LongLagTask):
        def build_model(self, seed):
            net = super().build_model(seed)
            for p in net.parameters():
                p.register_hook(lambda g: -g)  # the gradient points uphill: no step decreases the loss
            return net

    result = run(FullBatchMode(lambda r, w: Uphill(problem="adding", min_len=24, train_size=64, test_size=16),
                               FullBatchConfig(method=method, max_iter=3)), loop(10))
    assert result.summary["stopped_by"] == "max_steps" and result.summary["steps"] < 10
    assert "no decrease" in result.summary["status"] or "line search failed" in result.summary["status"]
    assert result.rows[-1]["test_mae"] > 0  # the end was evaluated


def test_a_non_finite_loss_names_the_step():
    class Exploding(LongLagTask):
        def build_model(self, seed):
            net = super().build_model(seed)
            calls = [0]

            def poison(_module, _inputs, output):
                calls[0] += 1
                return output * float("nan") if calls[0] > 8 else output

            net.head.register_forward_hook(poison)
            return net

    mode = FullBatchMode(lambda r, w: Exploding(problem="adding", min_len=24, train_size=64, test_size=16),
                         FullBatchConfig(max_iter=2))
    with pytest.raises(FloatingPointError, match=r"not finite \(nan\) at evaluation \d+.* \(during step \d+\)"):
        run(mode, loop(20))


def test_a_task_without_a_full_batch_is_refused(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcdefgh " * 200)
    mode = FullBatchMode(lambda r, w: CharStreamTask(text=str(text), streams=2, window=8, hidden=4),
                         FullBatchConfig())
    with pytest.raises(TypeError, match="CharStreamTask cannot be trained full-batch: it lacks full_batch"):
        run(mode, loop(1))


def _worker(rank: int, world: int, port: int, method: str, out: str) -> None:
    from distlstm.runtime.comm import open_comm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with open_comm() as comm:
        run(FullBatchMode(adding, FullBatchConfig(method=method, max_iter=3)), loop(3), comm=comm, folder=out)


@pytest.mark.multiprocess
@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_two_workers_take_the_steps_of_one_process(tmp_path, method):
    torch.set_num_threads(1)
    single = go(adding, method, 3, tmp_path / "one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, method, str(tmp_path / "two")), nprocs=2, join=True)
    two, _ = load_run_checkpoint(tmp_path / "two", "fullbatch")
    one, _ = load_run_checkpoint(tmp_path / "one", "fullbatch")
    assert two["world_size"] == 2
    theta = [torch.cat([t.reshape(-1) for t in c["state"]["model"].values()]) for c in (one, two)]
    torch.testing.assert_close(theta[1], theta[0], atol=1e-8, rtol=0)  # sums in another order: rounding only
    rows = list(read_metrics(tmp_path / "two" / "metrics.csv"))
    assert [r["train_loss"] for r in rows[1:]] == pytest.approx([r["train_loss"] for r in single.rows[1:]], rel=1e-8)
    assert [r["evaluations"] for r in rows] == [r["evaluations"] for r in single.rows]


@dataclass(frozen=True)
class AddingSection:
    min_len: int = flag(24, "minimal sequence length")
    train_size: int = flag(64, "training sequences")
    test_size: int = flag(16, "test sequences")


# a command as the CLI declares one: FullBatchConfig's fields become --method, --max-iter, --history-size, ...
FB = RunCommand(name="fb", help="fb", description="fb", sections={"task": AddingSection, "fullbatch": FullBatchConfig},
                make_mode=lambda s: FullBatchMode(lambda r, w: LongLagTask(rank=r, world_size=w, problem="adding",
                                                                           **asdict(s["task"])), s["fullbatch"]),
                mode_name=lambda s: "fullbatch", default_out="runs/fb", loop_defaults={"eval_every": 1})


def parse(argv):
    parser = argparse.ArgumentParser()
    add_run_command(parser.add_subparsers(), FB)
    return parser.parse_args(["fb", *argv])


def state_of(folder: Path):
    return load_run_checkpoint(folder, "fullbatch")[0]["state"]


def test_the_same_run_from_flags_from_a_config_file_and_resumed_from_its_folder(tmp_path):
    flags = ["--method", "cg", "--max-iter", "2", "--min-len", "22", "--no-progress"]
    assert run_command(FB, parse([*flags, "--steps", "4", "--out", str(tmp_path / "flags")])) == 0
    assert run_command(FB, parse(["--config", str(tmp_path / "flags" / "config.json"),
                                  "--out", str(tmp_path / "file")])) == 0
    same_state(state_of(tmp_path / "flags"), state_of(tmp_path / "file"))
    assert run_command(FB, parse([*flags, "--steps", "2", "--out", str(tmp_path / "part")])) == 0
    assert run_command(FB, parse(["--resume", str(tmp_path / "part"), "--steps", "4"])) == 0
    same_state(state_of(tmp_path / "flags"), state_of(tmp_path / "part"))
    with pytest.raises(ValueError, match=r"fullbatch.method: 'cg' in the run, 'lbfgs' now"):
        run_command(FB, parse(["--resume", str(tmp_path / "part"), "--method", "lbfgs"]))


def test_the_cg_update_flag_reaches_the_optimizer(tmp_path):
    """`train --optimizer cg --cg-update hs` is stored in the run's configuration and takes other steps than the
    default Polak–Ribière+ (the update formulas themselves: tests/bptt/test_fullbatch.py)."""
    import json

    from distlstm.cli import main

    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "64", "--test-size", "16",
            "--optimizer", "cg", "--max-iter", "3", "--steps", "4", "--no-progress"]
    assert main([*args, "--cg-update", "hs", "--out", str(tmp_path / "hs")]) == 0
    assert main([*args, "--out", str(tmp_path / "pr")]) == 0
    updates = {name: json.loads((tmp_path / name / "config.json").read_text())["optim"]["cg_update"]
               for name in ("hs", "pr")}
    assert updates == {"hs": "hs", "pr": "pr"}
    hs, pr = (load_run(tmp_path / name).model.state_dict() for name in ("hs", "pr"))
    assert any(not torch.equal(hs[k], pr[k]) for k in hs)


def test_the_lbfgs_tolerance_flag_reaches_the_optimizer(tmp_path, capsys):
    """`train --optimizer lbfgs --lbfgs-tolerance T` is stored in the run's configuration and is the tolerance of
    the L-BFGS the checkpoint holds (its default: FullBatchConfig's)."""
    import json

    from distlstm.cli import main

    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "64", "--test-size", "16",
            "--optimizer", "lbfgs", "--max-iter", "2", "--steps", "1", "--no-progress"]
    assert main([*args, "--lbfgs-tolerance", "1e-9", "--out", str(tmp_path / "torch")]) == 0
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    for name, tolerance in (("torch", 1e-9), ("default", FullBatchConfig().tolerance_change)):
        assert json.loads((tmp_path / name / "config.json").read_text())["optim"]["lbfgs_tolerance"] == tolerance
        ckpt, _ = load_run_checkpoint(tmp_path / name, "fullbatch")
        assert ckpt["state"]["algorithm"]["lbfgs"]["param_groups"][0]["tolerance_change"] == tolerance
    assert main([*args, "--lbfgs-tolerance", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--lbfgs-tolerance must be non-negative, got -1.0" in capsys.readouterr().err


def test_an_lbfgs_run_from_before_the_tolerance_setting_resumes_with_its_own(tmp_path):
    """A run whose config.json has no lbfgs_tolerance was made with torch's 1e-9: resuming it keeps 1e-9 (in the
    optimizer and in config.json), and asking for another tolerance is a changed setting."""
    import json

    from distlstm.cli import main

    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "64", "--test-size", "16",
            "--optimizer", "lbfgs", "--max-iter", "2", "--no-progress"]
    folder = tmp_path / "old"
    assert main([*args, "--steps", "1", "--lbfgs-tolerance", "1e-9", "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    del config["optim"]["lbfgs_tolerance"]  # as distlstm wrote it before the setting existed
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(folder), "--lbfgs-tolerance", "1e-14", "--steps", "2"]) == 2
    assert main(["train", "--resume", str(folder), "--steps", "2", "--no-progress"]) == 0
    assert json.loads((folder / "config.json").read_text())["optim"]["lbfgs_tolerance"] == 1e-9
    ckpt, _ = load_run_checkpoint(folder, "fullbatch")
    assert ckpt["step"] == 2 and ckpt["state"]["algorithm"]["lbfgs"]["param_groups"][0]["tolerance_change"] == 1e-9
