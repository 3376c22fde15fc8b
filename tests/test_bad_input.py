"""Bad input, across the CLI and the Python API: a clear message that names the value or the flag, and no file touched.

Every case runs against one folder of inputs built once per module (CSV files good and
bad, texts, config files, a finished online run and a char-LM run, and copies of the
online run with a damaged, NaN, non-PSD, version-1 or unreadable checkpoint). The
SHA-256 of every file in that folder is taken before the case and compared after it:
a refused command must leave every existing file as it was (no checkpoint rewritten,
no folder half-created over a user's files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from distlstm.cli import main
from distlstm.runs.checkpoint import save_run_checkpoint
from distlstm.runs.files import save_checkpoint


def _write_inputs(d: Path) -> None:
    rows = ["a,b"] + [f"{math.sin(i / 5):.4f},{math.cos(i / 7):.4f}" for i in range(80)]
    texts = {
        "good.csv": rows, "short.csv": rows[:6], "other.csv": ["x,y", *rows[1:]], "header.csv": ["a,b"],
        "textcell.csv": [*rows[:10], "0.1,abc", *rows[10:]], "ragged.csv": [*rows[:10], "0.1,0.2,0.3", *rows[10:]],
        "inf.csv": [*rows[:10], "inf,0.2", *rows[10:]],
        "huge.csv": ["a"] + [f"{1e200 * (1 + i % 3)}" for i in range(60)], "constant.csv": ["a"] + ["1.5"] * 60,
        "tiny.txt": ["abcdefghij" * 3], "text.txt": ["To be, or not to be, that is the question."] * 40,
        "bad.json": ["{not json"], "list.json": ["[1, 2]"], "section.json": [json.dumps({"nosuch": {}})],
        "wrongtype.json": [json.dumps({"online": {"hidden": "many"}})]}
    for name, lines in texts.items():
        (d / name).write_text("\n".join(lines) + "\n")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "emptydir").mkdir()
    (d / "notrun").mkdir()
    (d / "notrun" / "mine.txt").write_text("my own notes\n")


def _damaged_copies(d: Path, run: Path) -> None:
    """Copies of ``run`` whose checkpoint is unusable in one way each (no checkpoint.prev.pt to fall back to)."""
    for name in ("nanrun", "nonpsd", "damaged", "corrupt", "v1"):
        folder = d / name
        shutil.copytree(run, folder)
        (folder / "checkpoint.prev.pt").unlink(missing_ok=True)
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        body = {k: v for k, v in ckpt.items() if k not in ("format", "version", "checksum")}
        model = body["state"]["model"]
        if name == "nanrun":  # written with a valid checksum: only the value check can refuse it
            model[next(iter(model))].view(-1)[0] = float("nan")
            save_run_checkpoint(folder, body)
        elif name == "nonpsd":  # nodes 0 and 1: Σ with a positive diagonal and an eigenvalue of −4
            P = body["state"]["algorithm"]["states"]["P"]
            for k in (0, 1):
                P[k] = torch.eye(P.shape[-1], dtype=P.dtype)
                P[k][0, 1] = P[k][1, 0] = 5.0
            save_run_checkpoint(folder, body)
        elif name == "damaged":  # a changed weight under the old checksum
            ckpt["state"]["model"][next(iter(model))].view(-1)[0] += 1.0
            save_checkpoint(folder / "checkpoint.pt", ckpt)
        elif name == "corrupt":
            (folder / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
        else:
            save_checkpoint(folder / "checkpoint.pt", {"format": "distlstm-run", "version": 1})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_input")
    _write_inputs(d)
    o, c = d / "orun", d / "crun"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["online", "--data", str(d / "good.csv"), "--column", "a", "--nodes", "2", "--algorithm", "ekf",
                     "--steps", "4", "--no-progress", "--out", str(o)]) == 0
        assert main(["train", "--task", "char-lm", "--text", str(d / "text.txt"), "--hidden", "8", "--batch", "2",
                     "--window", "8", "--steps", "2", "--eval-chars", "50", "--no-progress", "--out", str(c)]) == 0
    _damaged_copies(d, o)
    return {"d": d, "o": o, "c": c}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# (case, command line: {d} the inputs folder, {o} the online run, {c} the char-LM run, what stderr must say)
CLI_CASES = [
    ("csv-missing", "online --data {d}/nope.csv --out {d}/new", "no CSV file at"),
    ("csv-empty", "online --data {d}/empty.csv --out {d}/new", "empty.csv has no rows"),
    ("csv-header-only", "online --data {d}/header.csv --out {d}/new", "header (a, b) but no data rows"),
    ("csv-text-cell", "online --data {d}/textcell.csv --column a --out {d}/new", "line 11, column 'b'"),
    ("csv-ragged", "online --data {d}/ragged.csv --column a --out {d}/new", "line 11: 3 cells, but the header has 2"),
    ("csv-inf", "online --data {d}/inf.csv --column a --out {d}/new", "line 11, column 'a': expected a finite"),
    ("csv-huge", "online --data {d}/huge.csv --column a --out {d}/new", "scale is not finite"),
    ("csv-binary", "online --data {d}/binary.csv --out {d}/new", "binary.csv is not a UTF-8 text file"),
    ("csv-constant", "online --data {d}/constant.csv --out {d}/new", "'a' of {d}/constant.csv is constant"),
    ("csv-is-folder", "online --data {d} --out {d}/new", "no CSV file at"),
    ("column-unknown", "online --data {d}/good.csv --column zz --out {d}/new", "no column 'zz'"),
    ("column-index", "online --data {d}/good.csv --column 7 --out {d}/new", "(fix --column)"),
    ("column-needed", "online --data {d}/good.csv --out {d}/new", "choose one with --column"),
    ("inputs-no-target", "online --data {d}/good.csv --inputs a --out {d}/new", "--inputs needs --target"),
    ("inputs-unknown", "online --data {d}/good.csv --inputs q --target a --out {d}/new", "no column 'q'"),
    ("column-and-target", "online --data {d}/good.csv --column a --target b --out {d}/new", "--column picks one"),
    ("window-too-long", "online --data {d}/good.csv --column a --window 500 --out {d}/new", "shorten --window"),
    ("window-zero", "online --data {d}/good.csv --column a --window 0 --out {d}/new", "fix --window"),
    ("horizon-zero", "online --data {d}/good.csv --column a --horizon 0 --out {d}/new", "--horizon"),
    ("warmup-one", "online --data {d}/good.csv --column a --warmup 1 --out {d}/new", "(fix --warmup)"),
    ("nodes-zero", "online --data {d}/good.csv --column a --nodes 0 --out {d}/new", "(fix --nodes)"),
    ("nodes-too-many", "online --data {d}/short.csv --column a --scaling none --nodes 50 --out {d}/new",
     "fewer than the 50 nodes"),
    ("hidden-zero", "online --data {d}/good.csv --column a --hidden 0 --out {d}/new", "(fix --hidden)"),
    ("sigma2-for-sgd", "online --data {d}/good.csv --column a --algorithm sgd --sigma2 0.1 --out {d}/new",
     "--sigma2 does not apply to sgd"),
    ("stateful-dekf", "online --data {d}/good.csv --column a --algorithm dekf --stateful --out {d}/new",
     "--stateful applies to ekf only"),
    ("lr-negative", "online --data {d}/good.csv --column a --algorithm sgd --lr -1 --out {d}/new", "(fix --lr)"),
    ("particles-zero", "online --data {d}/good.csv --column a --algorithm pf --particles 0 --out {d}/new",
     "(fix --particles)"),
    ("sigma2-zero", "online --data {d}/good.csv --column a --algorithm ekf --sigma2 0 --out {d}/new",
     "(fix --sigma2)"),
    ("edges-missing", "online --data {d}/good.csv --column a --topology edges --out {d}/new", "--edges '0-1"),
    ("edges-out-of-range", "online --data {d}/good.csv --column a --topology edges --edges 0-9 --out {d}/new",
     "fix --edges"),
    ("edges-garbage", "online --data {d}/good.csv --column a --topology edges --edges zz --out {d}/new",
     "fix --edges"),
    ("edges-without-topology", "online --data {d}/good.csv --column a --edges 0-1 --out {d}/new",
     "--edges is the edge list of --topology edges"),
    ("steps-zero", "online --data {d}/good.csv --column a --steps 0 --out {d}/new", "--steps must be at least 1"),
    ("eval-every-zero", "online --data {d}/good.csv --column a --eval-every 0 --out {d}/new", "--eval-every must"),
    ("seconds-negative", "online --data {d}/good.csv --column a --seconds -5 --out {d}/new", "--seconds must be"),
    ("check-every-zero", "online --data {d}/good.csv --column a --check-every 0 --out {d}/new", "(fix --check-every)"),
    ("device-cuda", "online --data {d}/good.csv --column a --device cuda --out {d}/new", "--device cpu"),
    ("out-not-empty", "online --data {d}/good.csv --column a --out {d}/notrun", "already holds files"),
    ("out-is-file", "online --data {d}/good.csv --column a --out {d}/good.csv", "is not a folder"),
    ("overwrite-not-run", "online --data {d}/good.csv --column a --overwrite --out {d}/notrun",
     "refusing to overwrite"),
    ("resume-missing", "online --resume {d}/nope", "no run folder at"),
    ("resume-empty", "online --resume {d}/emptydir", "has no config.json"),
    ("resume-with-out", "online --resume {o} --out {d}/new", "leave out --out"),
    ("resume-changed", "online --resume {o} --hidden 9", "online.hidden: 4 in the run, 9 now"),
    ("resume-other-command", "es --resume {o}", "resume it with distlstm online --resume"),
    ("resume-fewer-steps", "online --resume {o} --steps 2", "--steps 2 is a total"),
    ("resume-nan-state", "online --resume {d}/nanrun", "holds 1 NaN/inf value"),
    ("resume-non-psd", "online --resume {d}/nonpsd", "ekf at node 0, in the checkpoint loaded: the covariance Σ"),
    ("predict-non-psd", "predict --run {d}/nonpsd --data {d}/good.csv", "smallest eigenvalue -4"),
    ("config-missing", "online --config {d}/nope.json --out {d}/new", "no config file at"),
    ("config-bad-json", "online --config {d}/bad.json --out {d}/new", "bad.json is not valid JSON"),
    ("config-list", "online --config {d}/list.json --out {d}/new", "expected a JSON object of sections"),
    ("config-unknown-section", "online --config {d}/section.json --out {d}/new", "unknown section(s) ['nosuch']"),
    ("config-wrong-type", "online --config {d}/wrongtype.json --out {d}/new", "got 'many' (fix --hidden)"),
    ("config-other-command", "online --config {c}/config.json --out {d}/new", "configures a 'train' run"),
    ("predict-not-run", "predict --run {d}/notrun --data {d}/good.csv", "holds no checkpoint.pt"),
    ("predict-corrupt", "predict --run {d}/corrupt --data {d}/good.csv", "not a readable distlstm checkpoint"),
    ("predict-nan-model", "predict --run {d}/nanrun --data {d}/good.csv", "model['rnn.weight_ih_l0'] holds 1 NaN"),
    ("predict-damaged", "predict --run {d}/damaged --data {d}/good.csv", "do not match the checksum"),
    ("predict-version1", "predict --run {d}/v1 --data {d}/good.csv", "checkpoint version 1"),
    ("predict-wrong-columns", "predict --run {o} --data {d}/other.csv", "missing ['a', 'b']"),
    ("predict-short", "predict --run {o} --data {d}/short.csv", "needs at least 21"),
    ("predict-char-run", "predict --run {c} --data {d}/good.csv", "makes no forecasts of a CSV"),
    ("sample-online-run", "sample --run {o}", "trained no language model"),
    ("sample-temperature", "sample --run {c} --temperature -1", "--temperature must be positive"),
    ("sample-empty-prompt", "sample --run {c} --prompt ''", "(fix --prompt)"),
    ("sample-unknown-chars", "sample --run {c} --prompt ZZZ@", "change --prompt, or --unknown replace"),
    ("sample-missing", "sample --run {d}/nope", "holds no checkpoint.pt"),
    ("text-missing", "train --task char-lm --text {d}/nope.txt --out {d}/new", "no text file at"),
    ("text-empty", "train --task char-lm --text {d}/empty.csv --out {d}/new", "empty.csv is empty"),
    ("text-binary", "train --task char-lm --text {d}/binary.csv --out {d}/new", "binary.csv is not UTF-8 text"),
    ("es-text-short", "es --text {d}/tiny.txt --window 64 --out {d}/new", "fewer than a window of 64"),
    ("es-sigma", "es --sigma -1 --out {d}/new", "(fix --sigma)"),
    ("es-population-odd", "es --population 3 --out {d}/new", "(fix --population)"),
    ("train-cell-unknown", "train --task char-lm --cell nosuch --out {d}/new", "unknown cell 'nosuch'"),
    ("train-csv-no-data", "train --task csv --out {d}/new", "--task csv needs --data FILE"),
    ("bench-section", "bench --sections nosuch --output {d}/bench.md", "unknown benchmark sections ['nosuch']"),
    ("edges-fewer-nodes", "online --topology edges --edges 0-1,1-2 --nodes 4 --out {d}/new",
     "joins 3 nodes but --nodes is 4"),
    ("train-dropout", "train --task char-lm --dropout 2 --out {d}/new", "--dropout must be in [0, 1), got 2.0"),
    ("train-embedding", "train --task char-lm --embedding -3 --out {d}/new", "--embedding: must be a whole number"),
    ("collective-timeout", "es --collective-timeout 0 --out {d}/new", "--collective-timeout: must be a finite"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_with_a_clear_message(inputs: dict[str, Path], argv: str, expected: str) -> None:
    d = inputs["d"]
    before = _hashes(d)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(shlex.split(argv.format(**inputs)))
        except SystemExit as exit_:  # argparse's own refusals (a flag's type) exit 2 from the parser
            status = exit_.code
    message = err.getvalue()
    error = message.strip().splitlines()[-1]  # argparse prints its usage lines first
    assert status == 2 and error.startswith(f"distlstm {argv.split()[0]}: error: "), message
    assert expected.format(**inputs) in message, message
    assert "Traceback" not in message
    assert _hashes(d) == before  # nothing existing was changed
    assert not (d / "new").exists()  # and no run folder was left behind


def _api_cases() -> list[tuple[str, Callable[[dict[str, Path]], Any], type[Exception], str]]:
    from distlstm import LSTM
    from distlstm.data.forecast import forecast_windows
    from distlstm.data.observation import Observation
    from distlstm.data.table import read_table
    from distlstm.data.text import load_text
    from distlstm.experiments.sampling import sample_text
    from distlstm.models.functional import FunctionalModel
    from distlstm.modes import load_run
    from distlstm.modes.es import ESRunConfig
    from distlstm.modes.online import OnlineConfig, OnlineProblem, run_streams
    from distlstm.network import make_topology
    from distlstm.ops.psd import check_psd
    from distlstm.runs.config import LoopConfig

    bad_p = torch.tensor([[1.0, 5.0], [5.0, 1.0]], dtype=torch.float64)
    x = torch.zeros(2, 1, dtype=torch.float64)
    return [
        ("table-missing", lambda i: read_table(i["d"] / "nope.csv"), FileNotFoundError, "no CSV file at"),
        ("table-binary", lambda i: read_table(i["d"] / "binary.csv"), ValueError, "not a UTF-8 text file"),
        ("text-binary", lambda i: load_text(i["d"] / "binary.csv"), ValueError, "not UTF-8 text"),
        ("window-zero", lambda i: forecast_windows(read_table(i["d"] / "good.csv"), "a", window=0), ValueError,
         "fix window= / horizon="),
        ("nodes-zero", lambda i: OnlineConfig(nodes=0), ValueError, "(fix nodes=)"),
        ("lr-negative", lambda i: OnlineConfig(algorithm="sgd", lr=-1.0), ValueError, "(fix lr=)"),
        ("edges-needed", lambda i: OnlineConfig(topology="edges"), ValueError, "edges= '0-1,1-2,2-0'"),
        ("loop-steps", lambda i: LoopConfig(steps=0), ValueError, "steps= must be at least 1"),
        ("loop-seconds", lambda i: LoopConfig(seconds=-1.0), ValueError, "seconds= must be positive"),
        ("psd-negative", lambda i: check_psd(bad_p, "node 3, step 7"), FloatingPointError,
         "node 3, step 7: the covariance Σ is no longer a covariance: it is not positive semidefinite"),
        ("psd-asymmetric", lambda i: check_psd(torch.tensor([[1.0, 0.5], [0.0, 1.0]]), "node 0"),
         FloatingPointError, "not symmetric"),
        ("psd-shape", lambda i: check_psd(torch.ones(3), "node 0"), FloatingPointError, "shape (3,)"),
        ("load-nan", lambda i: load_run(i["d"] / "nanrun"), ValueError, "NaN/inf"),
        ("load-corrupt", lambda i: load_run(i["d"] / "corrupt"), ValueError, "cannot be read"),
        ("prompt-empty", lambda i: sample_text(i["c"], "", 5), ValueError, "(fix prompt=)"),
        ("prompt-unknown", lambda i: sample_text(i["c"], "ZZZ", 5), ValueError, "change prompt="),
        ("lstm-input-dims", lambda i: LSTM(3, 4, batch_first=True)(torch.zeros(5)), ValueError, "got shape (5,)"),
        ("lstm-features", lambda i: LSTM(3, 4, batch_first=True)(torch.zeros(2, 5, 7)), ValueError,
         "input feature size (last dimension): expected 3, got 7"),
        ("lstm-integer-input", lambda i: LSTM(3, 4)(torch.zeros(5, 2, 3, dtype=torch.int64)), TypeError,
         "floating-point tensor"),
        ("lstm-nan-input", lambda i: LSTM(3, 4)(torch.full((5, 2, 3), math.nan)), ValueError, "input"),
        ("theta-nan", lambda i: FunctionalModel(LSTM(1, 2))(torch.full((40,), math.nan), torch.zeros(1, 2, 1)),
         ValueError, "theta contains 40 NaN"),
        ("theta-size", lambda i: FunctionalModel(LSTM(1, 2))(torch.zeros(3), torch.zeros(1, 2, 1)), ValueError,
         "theta"),
        ("streams-empty", lambda i: run_streams(OnlineProblem([[], []]), "ekf", make_topology("ring", 2)),
         ValueError, "every node needs at least one observation"),
        ("streams-count", lambda i: run_streams(OnlineProblem([[Observation(x, 0.0)]]), "ekf",
                                                make_topology("ring", 2)), ValueError, "one stream per node (2)"),
        ("es-population", lambda i: ESRunConfig(population=3), ValueError, "(fix population=)"),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize(("call", "kind", "expected"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_refuses_with_a_clear_message(inputs: dict[str, Path], call: Callable[[dict[str, Path]], Any],
                                                 kind: type[Exception], expected: str) -> None:
    before = _hashes(inputs["d"])
    with pytest.raises(kind) as err:
        call(inputs)
    assert expected in str(err.value), str(err.value)
    assert _hashes(inputs["d"]) == before


def test_the_suite_is_broad() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 60
    assert len({c[0] for c in CLI_CASES}) == len(CLI_CASES) and len({c[0] for c in API_CASES}) == len(API_CASES)


def test_eval_chars_beyond_the_held_out_text_warns_with_the_number_used():
    from distlstm.data.text import held_out_slice

    val = torch.arange(31)
    with pytest.warns(UserWarning, match=r"eval_chars= 100 asks for more than the held-out text's 30 characters; "
                                         r"the evaluation uses all 30"):
        assert torch.equal(held_out_slice(val, 100), val)
    assert torch.equal(held_out_slice(val, 10), val[:11])


def test_online_help_shows_the_whole_stream_as_the_steps_default(capsys):
    with pytest.raises(SystemExit):
        main(["online", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the whole stream)" in text and "1000000000" not in text


def test_the_cli_prints_its_own_warnings_as_one_line(tmp_path, capsys):
    """A warning of distlstm's reads "distlstm es: warning: …" on the command line, not Python's file:line report."""
    from distlstm.cli import main

    text = tmp_path / "small.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    assert main(["es", "--text", str(text), "--hidden", "8", "--population", "8", "--steps", "1", "--eval-every", "1",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "distlstm es: warning: --eval-chars 20000 asks for more than the held-out text's" in err
    assert "UserWarning" not in err and "warnings.warn" not in err and "held_out_slice(" not in err


def test_cli_messages_reach_standard_error_in_one_write_each(monkeypatch, capsys):
    """Under torchrun every rank writes to one terminal, unbuffered: a message and its newline in separate
    writes let two ranks' errors run together on one line."""
    import io
    import sys

    from distlstm.cli import main

    calls: list[str] = []

    class Writes(io.StringIO):
        def write(self, text: str) -> int:
            calls.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Writes())
    assert main(["es", "--population", "7", "--steps", "1"]) == 2
    errors = [c for c in calls if "error:" in c]
    assert len(errors) == 1 and errors[0].endswith("\n") and "even population, got 7" in errors[0]
