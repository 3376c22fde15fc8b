"""The es mode in the run loop: it learns, resumes bit for bit, splits over workers like one worker, rejects bad
input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distlstm.cli import ES_COMMAND, build_parser, main
from distlstm.cli_runs import resolve_command
from distlstm.data.text import CharVocab, load_text, split_ids
from distlstm.es.fitness import char_loss
from distlstm.es.text import build_model
from distlstm.models.functional import flatten
from distlstm.models.networks import CharLM
from distlstm.modes import load_run
from distlstm.modes.es import ESMode, ESRunConfig
from distlstm.runs.checkpoint import load_run_checkpoint
from distlstm.runs.config import LoopConfig, config_document
from distlstm.runs.files import read_csv_numbers
from distlstm.runs.loop import RunResult, run
from distlstm.runtime.comm import LocalComm
from tests.launch import launch

TINY = ESRunConfig(hidden=16, population=32, windows=4, window=16, eval_chars=2000, lr=0.03)
TINY_FLAGS = ["--hidden", "16", "--population", "32", "--windows", "4", "--window", "16", "--eval-chars", "2000",
              "--lr", "0.03", "--no-progress"]


def es_run(folder: Path | None, steps: int, cfg: ESRunConfig = TINY, resume: bool = False,
           **loop: object) -> tuple[ESMode, RunResult]:
    settings = {"eval_every": 2, "checkpoint_every": 3, "progress": False, **loop}
    loop_cfg = LoopConfig(steps=steps, **settings)  # type: ignore[arg-type]
    mode = ESMode(cfg)
    doc = config_document("es", "es", {"es": cfg, "loop": loop_cfg})
    return mode, run(mode, loop_cfg, folder=folder, config=doc, resume=resume)


def without_time(rows: list[dict]) -> list[dict]:
    """Rows without their timings, empty cells (NaN) as None so that equal rows compare equal."""
    return [{k: None if v != v else v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_tiny_char_model_learns_within_seconds(tmp_path):
    text = load_text()
    vocab = CharVocab.from_text(text)
    _, val = split_ids(vocab.encode(text))
    fm = build_model(len(vocab), TINY.cell, TINY.hidden, seed=0)
    untrained = char_loss(fm, fm.flatten(), val[: TINY.eval_chars + 1])
    _, result = es_run(tmp_path, 60, eval_every=10, checkpoint_every=25)
    final = result.summary["val_nats_per_char"]
    assert result.rows[0]["step"] == 0 and result.rows[0]["val_nats_per_char"] == pytest.approx(untrained, abs=1e-6)
    assert final < untrained - 0.4, (untrained, final)
    assert result.summary["generations"] == result.summary["steps"] == 60
    assert result.summary["evaluations"] == 60 * 32 and result.summary["parameters"] == fm.numel
    # the reported loss is the loss of the checkpoint's model, recomputed here
    loaded = load_run(tmp_path)
    assert final == pytest.approx(char_loss(fm, flatten(loaded.model), val[: TINY.eval_chars + 1]), abs=1e-6)
    csv = read_csv_numbers(tmp_path / "metrics.csv")
    assert [r["step"] for r in csv] == list(range(61))
    assert [r["step"] for r in csv if r["val_nats_per_char"] == r["val_nats_per_char"]] == [0, 10, 20, 30, 40, 50, 60]
    assert all(r["bytes_per_worker"] == 32 * 4 and r["dropped"] == 0 for r in csv[1:])
    assert csv[-1]["train_nats_per_char"] < csv[1]["train_nats_per_char"]
    assert (tmp_path / "metrics.png").is_file() and (tmp_path / "summary.json").is_file()


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    whole, straight = es_run(tmp_path / "a", 10)
    es_run(tmp_path / "b", 4)
    part, _ = load_run_checkpoint(tmp_path / "b")
    assert part["step"] == part["state"]["algorithm"]["generation"] == 4
    resumed_mode, resumed = es_run(tmp_path / "b", 10, resume=True)
    a, _ = load_run_checkpoint(tmp_path / "a")
    b, _ = load_run_checkpoint(tmp_path / "b")
    for key in ("theta", "m", "v"):
        assert torch.equal(a["state"]["algorithm"][key], b["state"]["algorithm"][key]), key
    assert all(torch.equal(a["state"]["model"][k], b["state"]["model"][k]) for k in a["state"]["model"])
    assert b["state"]["algorithm"]["generation"] == 10
    assert without_time(straight.rows) == without_time(resumed.rows) and len(resumed.rows) == 11
    assert straight.summary["val_nats_per_char"] == resumed.summary["val_nats_per_char"]
    assert torch.equal(whole.state.theta, resumed_mode.state.theta)


def test_a_run_from_before_the_noise_table_resumes_with_its_own_noise(tmp_path):
    """A checkpoint without the noise kind (and a config without --noise) was trained with seeded ε: it goes on
    with it, giving the numbers of an uninterrupted seeded run, although the default is now the table."""
    from dataclasses import replace

    from distlstm.runs.checkpoint import save_run_checkpoint

    seeded = replace(TINY, noise="seeded")
    whole, _ = es_run(tmp_path / "a", 6, cfg=seeded)
    es_run(tmp_path / "b", 3, cfg=seeded)
    ckpt, _ = load_run_checkpoint(tmp_path / "b")
    del ckpt["state"]["algorithm"]["noise"]  # as written before the noise table
    save_run_checkpoint(tmp_path / "b", ckpt)
    stored = json.loads((tmp_path / "b" / "config.json").read_text())
    del stored["es"]["noise"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(stored))
    resumed, _ = es_run(tmp_path / "b", 6, resume=True)  # TINY: today's default, the table
    assert resumed.strategy.noise == "seeded"
    assert torch.equal(whole.state.theta, resumed.state.theta)
    table, _ = es_run(tmp_path / "c", 6)
    assert table.strategy.noise == "table" and not torch.equal(table.state.theta, whole.state.theta)


def test_the_run_folder_gives_a_char_model_ready_to_sample(tmp_path):
    mode, _ = es_run(tmp_path, 2)
    loaded = load_run(tmp_path)
    assert isinstance(loaded.model, CharLM) and not loaded.model.training
    assert loaded.mode == "es" and loaded.command == "es" and loaded.step == 2
    assert loaded.artifacts["kind"] == "char-lm" and loaded.artifacts["vocab"] == mode.vocab.chars
    assert loaded.artifacts["config"] == {"vocab_size": len(mode.vocab), "hidden_size": 16, "cell": "rnn"}
    assert torch.equal(flatten(loaded.model), mode.state.theta)
    ids = mode.vocab.encode("ROMEO.")[None]
    logits, _ = loaded.model(ids)
    torch.testing.assert_close(logits, mode.fm(mode.state.theta, ids)[0])


def test_same_run_from_flags_and_from_config(tmp_path, capsys):
    assert main(["es", *TINY_FLAGS, "--steps", "3", "--eval-every", "3", "--out", str(tmp_path / "f")]) == 0
    assert "openai-es rnn: validation" in capsys.readouterr().out
    stored = json.loads((tmp_path / "f" / "config.json").read_text())
    assert stored["es"]["population"] == 32 and stored["loop"]["steps"] == 3
    assert stored["loop"]["checkpoint_every"] == 50  # the es command's default
    assert main(["es", "--config", str(tmp_path / "f" / "config.json"), "--out", str(tmp_path / "g")]) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("f", "g"))
    assert a["val_nats_per_char"] == b["val_nats_per_char"] and a["generations"] == b["generations"] == 3
    assert json.loads((tmp_path / "g" / "config.json").read_text()) == stored
    assert torch.equal(flatten(load_run(tmp_path / "f").model), flatten(load_run(tmp_path / "g").model))


def test_resume_from_the_folder_alone(tmp_path, capsys):
    assert main(["es", *TINY_FLAGS, "--steps", "2", "--out", str(tmp_path / "r")]) == 0
    assert main(["es", "--resume", str(tmp_path / "r"), "--steps", "5"]) == 0
    assert main(["es", *TINY_FLAGS, "--steps", "5", "--out", str(tmp_path / "w")]) == 0
    assert torch.equal(flatten(load_run(tmp_path / "r").model), flatten(load_run(tmp_path / "w").model))
    capsys.readouterr()
    assert main(["es", "--resume", str(tmp_path / "r"), "--population", "64", "--sigma", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "es.population: 32 in the run, 64 now" in err and "es.sigma: 0.02 in the run, 0.05 now" in err


def test_defaults_are_the_ones_of_distlstm_es():
    args = build_parser().parse_args(["es"])
    sections, doc, folder, resume = resolve_command(ES_COMMAND, args)
    assert sections["es"] == ESRunConfig() and not resume and folder == Path("runs/es")
    assert (sections["loop"].steps, sections["loop"].eval_every, sections["loop"].checkpoint_every) == (500, 25, 50)
    assert doc["mode"] == doc["command"] == "es"


class ThreeWorkers(LocalComm):
    world_size = 3


def test_bad_input(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 3)
    with pytest.raises(ValueError, match="fewer than a window of 32 \\+ 1"):
        ESMode(ESRunConfig(text=str(short), window=32)).init(LocalComm(), 0)
    with pytest.raises(ValueError, match="population 32 must be a multiple of the 3 workers"):
        ESMode(TINY).init(ThreeWorkers(), 0)
    with pytest.raises(ValueError, match="unknown strategy 'cma'"):
        ESRunConfig(strategy="cma")
    with pytest.raises(ValueError, match="mirrored sampling needs an even population, got 31"):
        ESRunConfig(population=31)
    with pytest.raises(ValueError, match="sigma must be a positive finite number, got nan"):
        ESRunConfig(sigma=float("nan"))
    with pytest.raises(ValueError, match="window must be positive, got 0"):
        ESRunConfig(window=0)
    with pytest.raises(TypeError, match=r"lr must be a number, got '0\.1'"):
        ESRunConfig(lr="0.1")  # type: ignore[arg-type]
    assert main(["es", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "no text file at" in capsys.readouterr().err
    assert main(["es", "--population", "1", "--out", str(tmp_path / "y")]) == 2
    assert "population must be an int ≥ 2, got 1" in capsys.readouterr().err


def test_resume_refuses_a_text_with_another_vocabulary(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    cfg = ESRunConfig(text=str(text), hidden=4, population=4, windows=2, window=8, eval_chars=50)
    es_run(tmp_path / "r", 1, cfg)
    text.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG! " * 20)
    with pytest.raises(ValueError, match="the text changed"):
        es_run(tmp_path / "r", 2, cfg, resume=True)


@pytest.mark.multiprocess
def test_two_workers_give_the_theta_of_one_worker_and_resume_together(tmp_path):
    args = ["es", *TINY_FLAGS, "--eval-every", "3", "--eval-chars", "1000"]
    launch([*args, "--steps", "6"], tmp_path / "one", 1)
    launch([*args, "--steps", "3"], tmp_path / "two", 2)
    launch(["es", "--resume", str(tmp_path / "two"), "--steps", "6"], None, 2)
    a, _ = load_run_checkpoint(tmp_path / "one")
    b, _ = load_run_checkpoint(tmp_path / "two")
    assert a["step"] == b["step"] == 6 and b["world_size"] == 2
    for key in ("theta", "m", "v"):
        assert torch.equal(a["state"]["algorithm"][key], b["state"]["algorithm"][key]), key
    one, two = (without_time(read_csv_numbers(tmp_path / d / "metrics.csv")) for d in ("one", "two"))
    assert [r["bytes_per_worker"] for r in two[1:]] == [16 * 4] * 6  # each of 2 workers sends its 16 fitnesses
    assert one == [{**r, "bytes_per_worker": 32 * 4 if r["step"] else None} for r in two]
