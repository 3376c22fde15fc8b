"""The distlstm command: help, info, demo and bench, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distlstm.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distlstm.cli", *args], capture_output=True, text=True, timeout=300)


def subcommands() -> dict:
    parser = build_parser()
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


COMMANDS = ["bench", "demo", "es", "info", "online", "predict", "reproduce", "sample", "train"]


def test_the_command_list_is_the_documented_one():
    assert sorted(subcommands()) == COMMANDS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"distlstm {name}" in readme for name in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_for_every_flag(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: distlstm {command}")
    sub = subcommands()[command]
    assert sub.description, f"distlstm {command} has no description"
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help.strip(), f"distlstm {command}: {action.option_strings} has no help"
        name = action.option_strings[-1] if action.option_strings else (action.metavar or "{")
        assert name in text, name


def test_the_installed_entry_point_answers_help():
    result = run_cli("--help")
    assert result.returncode == 0 and "usage: distlstm" in result.stdout
    assert all(name in result.stdout for name in COMMANDS)


def test_info_reports_backends(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "gloo" in info["distributed_backends"] and info["torch"].startswith("2.")
    assert info["peephole_loops"].startswith(("C++ loops (", "ATen loops ("))  # which, and where or why
    assert info["kalman_downdate"].startswith(("C++ one-pass loop (", "ATen passes ("))


def test_demo_writes_a_run_folder_and_learns(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "200", "--hidden", "64", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("config.json", "metrics.csv", "loss.png", "sample.txt", "report.md"):
        assert (out / name).is_file(), name
    # 200 Adam steps already beat letter frequencies (the unigram entropy).
    assert summary["val_nats_per_char"] < summary["unigram_entropy"] - 0.5


def test_demo_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["demo", "--cell", "gru", "--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "unknown cell 'gru'" in capsys.readouterr().err
    result = run_cli("demo", "--cell-opt", "rank")
    assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr


def test_bench_quick_writes_markdown(tmp_path):
    out = tmp_path / "B.md"
    assert main(["bench", "--quick", "--repeats", "1", "--sections", "cells,batched,online", "--output", str(out),
                 "--notes", str(tmp_path / "none")]) == 0
    text = out.read_text()
    assert "| nn.LSTM (baseline) |" in text and "speed-up" in text and "| dpf | 8 |" in text
    assert "| dpf | pf | 8 | 50 |" in text and "| dekf block | ekf | 8 |" in text  # ratios beside their baselines
    assert "| 8 | 584 | 1 |" in text and "| 8 | 584 | 2 |" in text  # Jacobian rows beside generic reverse mode
    assert main(["bench", "--sections", "cells,gpus", "--output", "-"]) == 2


def test_bptt_benchmark_pieces():
    from distlstm.bench.bptt import WorkersRow, bench_vectorization
    from distlstm.bench.report import render_bptt

    row = bench_vectorization(batch=8, steps=4, repeats=1)
    assert row.looped_ms > 0 and row.batched_ms > 0  # which is faster is a benchmark figure, not a unit test
    text = render_bptt([row], [WorkersRow("1 worker × 1 thread", 1.0, 100.0), WorkersRow("2", 1.0, 150.0)],
                       [WorkersRow("1 worker × 1 thread", 2.0, 0.2), WorkersRow("2", 1.0, 0.1)], steps=5, hidden=8,
                       batch=4, train=100, min_len=30)
    assert "| 2 | 1.00 | 150 | 1.50 |" in text and "| 2 | 1.00 | 0.100 | 2.00 |" in text


def test_es_benchmark_pieces():
    from distlstm.bench.es import ESWorkersRow, bench_es_batched
    from distlstm.bench.report import render_es

    rows = bench_es_batched(("rnn",), population=8, repeats=1)
    assert rows[0].batched_evals_per_s > 0 and rows[0].n_theta == 13_641
    text = render_es(rows, [ESWorkersRow("1 worker × 1 thread", 2.0, 100.0), ESWorkersRow("2", 1.0, 200.0)], 5)
    assert "| 2 | 1.0 | 200 | 2.00 |" in text


def test_es_generation_profile_and_its_flop_floor():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from distlstm.bench.es import bench_es_generation, forward_flops
    from distlstm.bench.report import render_es

    # the floor's count is the matrix products of a recurrence written out: W windows × T steps of H·(G·H) and H·V
    w, t, h, v = 3, 5, 8, 11
    for cell, gates in (("rnn", 1), ("lstm", 4)):
        counter = FlopCounterMode(display=False)
        with counter:
            state = torch.zeros(w, h)
            for _ in range(t):
                pre = state @ torch.zeros(h, gates * h)
                state = torch.tanh(pre[:, :h])
                state @ torch.zeros(h, v)
        assert forward_flops(cell, v, h, w * t) == counter.get_total_flops() == 2 * w * t * (gates * h * h + h * v)
    rows = bench_es_generation(("rnn",), population=8, windows=2, window=4, compiled=(False,), repeats=1)
    parts = {"windows", "noise", "fitness", "update"}
    assert set(rows[0].ms) == parts | {"seeded_noise"} and all(v > 0 for v in rows[0].ms.values())
    assert rows[0].generation_ms == pytest.approx(sum(rows[0].ms[k] for k in parts))  # the baseline is not a part
    assert rows[0].floor_ms == pytest.approx(8 * forward_flops("rnn", 73, 64, 8) / rows[0].gflops / 1e6)
    text = render_es([], [], 5, rows)
    assert "| rnn | eager |" in text and f"{rows[0].gflops:.0f} GFLOP/s" in text


def test_evotorch_section_explains_its_environment(capsys):
    import importlib.util

    if importlib.util.find_spec("evotorch") is not None:
        pytest.skip("evotorch is installed here; the message is for environments without it")
    assert main(["bench", "--sections", "evotorch", "--output", "-"]) == 2
    assert "make bench-evotorch" in capsys.readouterr().err


def test_evotorch_table_rendering():
    from distlstm.bench.evotorch_compare import EvoRow
    from distlstm.bench.report import render_evotorch

    text = render_evotorch([EvoRow("distlstm OpenAI-ES, 1 process, batched population", 4000.0),
                            EvoRow("EvoTorch PGPE, NEProblem, 1 process", 1000.0)])
    assert "| distlstm OpenAI-ES, 1 process, batched population | 4,000 | 4.00 |" in text


@pytest.mark.slow
def test_bench_es_bptt_and_compile_sections_end_to_end(tmp_path):
    """The worker benchmarks start real torchrun runs; --compile times torch.compile of the loop (minutes)."""
    out = tmp_path / "B.md"
    assert main(["bench", "--quick", "--repeats", "1", "--sections", "es,bptt", "--output", str(out),
                 "--notes", str(tmp_path / "none")]) == 0
    text = out.read_text()
    assert "distlstm bench --quick --sections es,bptt" in text
    for row in ("| 1 worker × 1 thread |", "| 2 workers × 1 thread |", "| 1 worker × 2 threads |"):
        assert text.count(row) >= 3, row  # ES, DDP and L-BFGS worker tables
    compiled = tmp_path / "C.md"
    assert main(["bench", "--quick", "--compile", "--repeats", "1", "--sections", "cells", "--output", str(compiled),
                 "--notes", str(tmp_path / "none")]) == 0
    assert "lstm, torch.compile of the loop" in compiled.read_text()


@pytest.mark.parametrize(("setting", "said"), [
    ({"online": {"hidden": -3}}, 'sets it: "online": {"hidden": -3}'),  # refused by the section's own check
    ({"online": {"topology": "blob"}}, 'sets it: "online": {"topology": "blob"}'),  # refused when the mode is built
    ({"data": {"window": 0}}, 'sets it: "data": {"window": 0}'),
])
def test_a_bad_config_value_names_its_file(tmp_path, capsys, setting, said):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(setting))
    assert main(["online", "--config", str(config), "--out", str(tmp_path / "r"), "--steps", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{config} {said}" in err, err


def test_a_flag_over_a_config_value_is_blamed_alone(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"online": {"hidden": -3}}))
    assert main(["online", "--config", str(config), "--hidden", "0", "--out", str(tmp_path / "r"), "--steps", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "got 0 (fix --hidden)" in err and "sets it" not in err, err
