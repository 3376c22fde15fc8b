"""The word-lm task: candidates from (seed, step); train checkpoints that sampling rebuilds (2 workers: test_ddp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distlstm.bptt.tasks import WordStreamTask
from distlstm.cli import main
from distlstm.data.words import SHAKESPEARE_COMPLETE
from distlstm.experiments.sampling import sample_text
from distlstm.modes import load_run


def text_file(folder: Path) -> str:
    path = Path(folder, "words.txt")
    lines = SHAKESPEARE_COMPLETE.read_text(encoding="utf-8").splitlines()[200:1400]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def word_task(text: str, rank: int = 0, world: int = 1, streams: int = 4) -> WordStreamTask:
    return WordStreamTask(rank=rank, world_size=world, text=text, streams=streams, window=6, embedding=8, hidden=32,
                          cell="glstm", cell_options={"groups": (2, 4)}, dropout=0.0, num_sampled=40,
                          max_vocab=300, dtype="float64", eval_tokens=100)


def test_candidates_depend_on_the_step_and_seed_only(tmp_path: Path) -> None:
    task = word_task(text_file(tmp_path))
    model = task.build_model(0)
    losses = []
    for _ in range(2):
        batch = task.batch(5, seed=3)
        losses.append(task.loss(model, batch, None)[0].item())
    assert losses[0] == losses[1]
    task.batch(6, seed=3)
    assert task.loss(model, task.batch(5, seed=3), None)[0].item() == losses[0]


def test_more_samples_than_words_is_an_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"num_sampled=999.*vocabulary of 300"):
        WordStreamTask(text=text_file(tmp_path), num_sampled=999, max_vocab=300)


def test_sampling_from_train_checkpoints_of_the_char_and_word_models(tmp_path: Path, capsys) -> None:
    text = text_file(tmp_path)
    common = ["--steps", "3", "--eval-every", "3", "--no-progress", "--text", text, "--batch", "2", "--window", "5"]
    assert main(["train", "--task", "word-lm", "--proj", "8", "--hidden", "32", "--samples", "20", "--vocab-size",
                 "200", "--cell", "flstm", "--cell-opt", "rank=4", "--eval-tokens", "50", "--out",
                 str(tmp_path / "w"), *common]) == 0
    assert main(["train", "--task", "char-lm", "--hidden", "16", "--eval-chars", "100", "--out", str(tmp_path / "c"),
                 *common]) == 0
    artifacts = load_run(tmp_path / "w").artifacts
    assert artifacts["kind"] == "word-lm" and len(artifacts["vocab"]) == 200
    words = sample_text(tmp_path / "w" / "checkpoint.pt", "the king", 12, temperature=0.0)
    assert words.startswith("the king ") and len(words.split()) >= 8
    assert words == sample_text(tmp_path / "w" / "checkpoint.pt", "the king", 12, temperature=0.0, seed=5)
    chars = sample_text(tmp_path / "c" / "checkpoint.pt", "the ", 20, temperature=1.0)
    assert chars.startswith("the ") and len(chars) == 24
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "w" / "checkpoint.pt"), "--prompt", "the king", "--greedy",
                 "--length", "12"]) == 0
    assert capsys.readouterr().out.strip() == words.strip()
    # unknown prompt symbols: an error naming them and the flag, or replaced
    assert main(["sample", "--checkpoint", str(tmp_path / "w" / "checkpoint.pt"), "--prompt",
                 "the zyzzyva", "--length", "3"]) == 2
    assert "'zyzzyva'" in (err := capsys.readouterr().err) and "--unknown replace" in err
    assert main(["sample", "--checkpoint", str(tmp_path / "w" / "checkpoint.pt"), "--prompt", "the zyzzyva",
                 "--length", "3", "--unknown", "replace"]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "w" / "checkpoint.pt"), "--prompt", "zyzzyva qwxy",
                 "--unknown", "replace"]) == 2
    assert "every word of the prompt" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "c" / "checkpoint.pt"), "--prompt", "the \u00e6",
                 "--length", "3"]) == 2
    assert "--unknown replace" in capsys.readouterr().err


def test_word_lm_cli_errors_name_the_flag(tmp_path: Path, capsys) -> None:
    text = text_file(tmp_path)
    assert main(["train", "--task", "word-lm", "--text", text, "--samples", "5000", "--vocab-size", "300",
                 "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--samples" in (err := capsys.readouterr().err) and "5000" in err
    assert main(["train", "--task", "word-lm", "--text", text, "--min-count", "100000", "--out",
                 str(tmp_path / "y"), "--no-progress"]) == 2
    assert "min_count=100000" in (err := capsys.readouterr().err) and "--min-count" in err
