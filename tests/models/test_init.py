"""The matrix-batch paper's sparse initialisation (models/init.py) and the long-lag tasks' ``init`` setting."""

from __future__ import annotations

import pytest
import torch

from distlstm.bptt.tasks import LongLagTask, longlag_model
from distlstm.models.init import SPARSE_INPUT_GATE_BIAS, SPARSE_SCALE, SPARSE_ZERO_FRACTION, sparse_init_
from distlstm.models.networks import SequenceRegressor


def wide_regressor(**options) -> SequenceRegressor:
    return SequenceRegressor(3, 64, cell="peephole", pooling="last", head_bias=True, **options).double()


@pytest.mark.parametrize("forget_gate", [False, True])
def test_sparse_start_draws_small_weights_with_zeros_and_closed_input_gates(forget_gate):
    """Every weight in U(−0.1, 0.1) with ≈ 40 % zeros; bias_hh 0; the input gates' biases −1 + U(−0.1, 0.1), the
    other gates' biases small: the input gate is found by name in both gate orders."""
    model = sparse_init_(wide_regressor(forget_gate=forget_gate), torch.Generator().manual_seed(0))
    cell, n = model.rnn.cells[0], 64
    weights = torch.cat([p.flatten() for name, p in model.named_parameters() if "bias_" not in name])
    assert weights.abs().max() <= SPARSE_SCALE
    assert float((weights == 0).double().mean()) == pytest.approx(SPARSE_ZERO_FRACTION, abs=0.03)
    assert torch.equal(cell.bias_hh, torch.zeros_like(cell.bias_hh))
    i = cell.gate_names.index("i")
    input_gate = cell.bias_ih[i * n : (i + 1) * n]
    assert ((input_gate - SPARSE_INPUT_GATE_BIAS).abs() <= SPARSE_SCALE).all()
    others = torch.cat([cell.bias_ih[: i * n], cell.bias_ih[(i + 1) * n :]])
    assert others.abs().max() <= SPARSE_SCALE and len(others) == (len(cell.gate_names) - 1) * n


def test_sparse_start_is_the_generators():
    """The same seed gives the same weights, another seed others, and the global RNG plays no part."""
    def start(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(global_seed)
        return sparse_init_(wide_regressor(), torch.Generator().manual_seed(seed)).state_dict()

    a, b, c = start(1, 0), start(1, 5), start(2, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_a_cell_with_one_bias_keeps_it_and_shifts_its_input_gate():
    model = sparse_init_(wide_regressor(single_bias=True), torch.Generator().manual_seed(0))
    cell = model.rnn.cells[0]
    assert cell.bias_hh is None and (cell.bias_ih[:64] < -0.85).all() and (cell.bias_ih[64:].abs() <= 0.1).all()


@pytest.mark.parametrize(("kwargs", "message"), [({"zero_fraction": 1.0}, "zero_fraction"),
                                                 ({"scale": 0.0}, "scale")])
def test_sparse_start_refuses_impossible_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparse_init_(wide_regressor(), torch.Generator(), **kwargs)


def test_the_long_lag_task_starts_from_its_init():
    """``init="sparse"`` (the default) is sparse_init_ from a generator seeded with the run seed; ``"uniform"`` is
    the network's own start, as long-lag runs began before the setting."""
    kwargs = {"min_len": 24, "train_size": 8, "test_size": 4}
    sparse = LongLagTask(**kwargs).build_model(3).state_dict()
    reference = sparse_init_(longlag_model(seed=3), torch.Generator().manual_seed(3)).state_dict()
    assert all(torch.equal(sparse[k], reference[k]) for k in reference)
    uniform = LongLagTask(**kwargs, init="uniform").build_model(3).state_dict()
    own = longlag_model(seed=3).state_dict()
    assert all(torch.equal(uniform[k], own[k]) for k in own)
    with pytest.raises(ValueError, match="unknown initialisation 'xavier'"):
        LongLagTask(**kwargs, init="xavier")


def test_the_init_flag_is_recorded_and_an_old_run_reads_uniform(tmp_path, capsys):
    """`train --init` reaches config.json and the task that builds the model; a run from before the setting was
    made with the uniform start and resumes as such."""
    import json

    from distlstm.cli import main
    from distlstm.modes.train_tasks import TaskConfig, build_task

    args = ["train", "--task", "adding", "--min-len", "24", "--train-size", "64", "--test-size", "16",
            "--optimizer", "lbfgs", "--max-iter", "1", "--no-progress", "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "u"), "--init", "uniform"]) == 0
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    for name, init in (("u", "uniform"), ("s", "sparse")):
        task = json.loads((tmp_path / name / "config.json").read_text())["task"]
        assert task["init"] == init and build_task(TaskConfig(**task)).init == init
    with pytest.raises(SystemExit) as stop:
        main([*args, "--out", str(tmp_path / "bad"), "--init", "xavier"])
    assert stop.value.code == 2
    assert "invalid choice: 'xavier'" in capsys.readouterr().err
    folder = tmp_path / "u"
    config = json.loads((folder / "config.json").read_text())
    del config["task"]["init"]  # as distlstm wrote it before the setting existed
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(folder), "--steps", "2", "--no-progress"]) == 0
    assert json.loads((folder / "config.json").read_text())["task"]["init"] == "uniform"


def test_every_cell_of_a_stack_shifts_its_input_gate_once():
    """Stacked and bidirectional layers: each cell's input-gate bias is shifted once (−1 + U(−0.1, 0.1)), however the
    stack holds its cells."""
    from distlstm.models.sequence import LSTM

    stack = LSTM(3, 16, num_layers=2, bidirectional=True, cell="peephole").double()
    sparse_init_(stack, torch.Generator().manual_seed(0))
    assert len(stack.cells) == 4
    for cell in stack.cells:
        assert ((cell.bias_ih[:16] + 1).abs() <= SPARSE_SCALE).all() and (cell.bias_ih[16:].abs() <= SPARSE_SCALE).all()


def test_a_grouped_cell_shifts_only_its_input_gates():
    """G-LSTM keeps a (k, 4n/k) bias, one row per group: every group's input-gate block moves, its other gates
    do not."""
    from distlstm.models.sequence import LSTM

    stack = LSTM(4, 8, cell="glstm", groups=2).double()
    sparse_init_(stack, torch.Generator().manual_seed(0))
    bias = stack.cells[0].bias_ih
    blocks = bias.view(2, 4, -1)  # group, gate (i, f, g, o), unit
    assert bias.shape == (2, 16) and stack.cells[0].gate_names.index("i") == 0
    assert ((blocks[:, 0] + 1).abs() <= SPARSE_SCALE).all() and (blocks[:, 1:].abs() <= SPARSE_SCALE).all()
