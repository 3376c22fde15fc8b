"""``distlstm train`` as a run command: flags and --config give one run, --resume FOLDER alone continues it,
unsafe changes are refused, and the model comes out of the folder (a csv run forecasts new data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distlstm.cli import main
from distlstm.models.networks import CharLM
from distlstm.modes import load_run
from distlstm.modes.train_tasks import TaskConfig, build_task
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.metrics import read_metrics
from tests.bptt.test_ddp import assert_same, table_file, text_file, without_time

CHAR = ["train", "--task", "char-lm", "--hidden", "12", "--window", "8", "--batch", "4", "--dtype", "float64",
        "--eval-chars", "200", "--eval-every", "2", "--checkpoint-every", "2", "--seed", "3", "--no-progress"]


def rows(folder: Path) -> list[dict]:
    return without_time(list(read_metrics(folder / "metrics.csv")))


def test_flags_config_and_resume_give_the_same_run(tmp_path, capsys):
    char = [*CHAR, "--text", text_file(tmp_path)]
    assert main([*char, "--steps", "6", "--out", str(tmp_path / "flags")]) == 0
    assert "adam: val_nats_per_char" in capsys.readouterr().out
    # the same configuration from the run's config.json
    assert main(["train", "--config", str(tmp_path / "flags" / "config.json"), "--out", str(tmp_path / "config")]) == 0
    # stopped at step 4, then continued from the folder alone
    assert main([*char, "--steps", "4", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--steps", "6", "--no-progress"]) == 0
    whole, _ = load_run_checkpoint(tmp_path / "flags")
    for other in ("config", "resumed"):
        ckpt, _ = load_run_checkpoint(tmp_path / other)
        assert_same(ckpt["state"], whole["state"])
        assert rows(tmp_path / other) == rows(tmp_path / "flags")
    a, b = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("flags", "config"))
    assert a == b and a["task"]["hidden"] == 12 and a["optim"]["optimizer"] == "adam"


def test_unsafe_changes_and_old_spellings_are_refused(tmp_path, capsys):
    char = [*CHAR, "--text", text_file(tmp_path)]
    assert main([*char, "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--hidden", "8", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "task.hidden: 12 in the run, 8 now" in err and "start a new run" in err
    assert main(["train", "--resume", str(tmp_path / "run"), "--lr", "0.1"]) == 2
    assert "optim.lr: 0.003 in the run, 0.1 now" in capsys.readouterr().err
    assert main([*char, "--target", "1.5", "--out", str(tmp_path / "t")]) == 2
    assert "--stop-at NUMBER" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error
        main([*char, "--cell-opt", "rank", "--out", str(tmp_path / "c")])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_bad_cell_option_in_a_config_file_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"cell_opt=: expected KEY=VALUE"):
        TaskConfig(cell_opt=("rank",))


def test_the_char_model_comes_out_of_the_folder(tmp_path):
    assert main([*CHAR, "--text", text_file(tmp_path), "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, CharLM) and not run.model.training and run.mode == "ddp" and run.step == 2
    assert set(run.artifacts) == {"kind", "vocab", "config", "dtype"} and run.artifacts["kind"] == "char-lm"
    ckpt, _ = load_run_checkpoint(tmp_path / "run")
    assert_same(run.model.state_dict(), ckpt["state"]["model"])
    assert run.forecaster is None


def test_the_csv_forecaster_reproduces_the_runs_predictions(tmp_path):
    data = table_file(tmp_path / "t.csv")
    args = ["--task", "csv", "--data", data, "--inputs", "a,b", "--target", "y", "--window", "4", "--hidden", "8"]
    assert main(["train", *args, "--steps", "20", "--eval-every", "10", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    assert run.forecaster is not None
    forecasts = run.forecaster(Path(data))
    # the model's own predictions on the task's windows (training part, then test part), in y's units
    task = build_task(TaskConfig(task="csv", data=data, inputs="a,b", target="y", window=4, hidden=8))
    shift, scale = task.maps[-1]
    with torch.no_grad():
        expected = shift + scale * run.model(torch.cat([task.train.x, task.test.x]))
    assert len(forecasts) == len(expected) == 236
    torch.testing.assert_close(torch.tensor([f["prediction"] for f in forecasts], dtype=torch.float64), expected,
                               rtol=1e-12, atol=0)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert forecasts[0]["row"] == 6 and forecasts[0]["target"] == pytest.approx(float(lines[5].split(",")[2]))
    assert forecasts[0]["lower"] is None and forecasts[0]["upper"] is None
    test = forecasts[-len(task.test):]
    mse = sum((f["prediction"] - f["target"]) ** 2 for f in test) / len(test)
    assert mse == pytest.approx(json.loads((tmp_path / "run" / "summary.json").read_text())["test_mse"], rel=1e-9)
    # data with another column set is refused, naming both
    wider = tmp_path / "wider.csv"
    wider.write_text("\n".join(f"{line},1" for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"has 4 column\(s\); the model was trained on a table of 3"):
        run.forecaster(wider)


def test_a_checkpoint_of_the_old_train_layout_is_refused_with_a_clear_message(tmp_path):
    from distlstm.runs.files import save_checkpoint

    save_checkpoint(tmp_path / "checkpoint.pt", {"version": 1, "settings": {}, "world_size": 1, "step": 3,
                                                 "model": {"w": torch.zeros(2)}})
    with pytest.raises(ValueError, match=r"written by distlstm 0.1 \(checkpoint version 1\)"):
        load_run(tmp_path)
