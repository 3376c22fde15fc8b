"""Bad input gets a clear ValueError/TypeError naming the problem, never a deep crash."""

from __future__ import annotations

import pytest
import torch

import distlstm
from distlstm.models import LSTMCell, SequenceRegressor, make_cell


@pytest.fixture
def model() -> distlstm.LSTM:
    return distlstm.LSTM(3, 4, batch_first=True)


def test_wrong_number_of_dimensions(model):
    with pytest.raises(ValueError, match=r"input must have 2 or 3 dimensions .* got shape \(2, 3, 4, 3\)"):
        model(torch.zeros(2, 3, 4, 3))
    with pytest.raises(ValueError, match=r"x must have 1 or 2 dimensions"):
        LSTMCell(3, 4)(torch.zeros(1, 2, 3))


def test_feature_size_mismatch(model):
    with pytest.raises(ValueError, match=r"input feature size .*: expected 3, got 5"):
        model(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"x feature size .*: expected 3, got 2"):
        LSTMCell(3, 4)(torch.zeros(2, 2))


def test_input_of_another_float_dtype_is_named_as_nn_lstm_does(model):
    ref = torch.nn.LSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="float32"):  # the reference: nn.LSTM refuses it with a clear message
        ref(torch.zeros(2, 4, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"model's dtype torch.float32, got torch.float64"):
        model(torch.zeros(2, 4, 3, dtype=torch.float64))
    assert model.double()(torch.zeros(2, 4, 3, dtype=torch.float64))[0].dtype == torch.float64


@pytest.mark.parametrize("lengths", [[0, 2], [3, 5], [-1, 1]])
def test_lengths_out_of_range(model, lengths):
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        model(torch.zeros(2, 4, 3), lengths=torch.tensor(lengths))


def test_lengths_of_wrong_shape_or_type(model):
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        model(torch.zeros(2, 4, 3), lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(2, 4, 3), lengths=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(model, bad):
    x = torch.zeros(2, 4, 3)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match="input contains 1 NaN or infinite"):
        model(x)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        LSTMCell(3, 4)(x[:, 2])


def test_empty_sequence(model):
    with pytest.raises(ValueError, match="no time steps"):
        model(torch.zeros(2, 0, 3))


def test_wrong_initial_state(model):
    with pytest.raises(ValueError, match=r"hx\[1\]: expected shape \(1, 2, 4\), got \(1, 2, 5\)"):
        model(torch.zeros(2, 4, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5)))
    with pytest.raises(ValueError, match="tuple of 2 tensors"):
        model(torch.zeros(2, 4, 3), (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match=r"state\[0\]: expected shape \(2, 4\)"):
        LSTMCell(3, 4)(torch.zeros(2, 3), (torch.zeros(2, 5), torch.zeros(2, 4)))


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="unknown cell 'gru'"):
        distlstm.LSTM(3, 4, cell="gru")
    with pytest.raises(ValueError, match="hidden_size must be positive, got 0"):
        distlstm.LSTM(3, 0)
    with pytest.raises(TypeError, match="input_size must be an int"):
        LSTMCell(3.5, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        distlstm.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"alpha .* must be a positive finite number"):
        LSTMCell(3, 4, alpha=0.0)
    with pytest.raises(ValueError, match="proj_size must be 0"):
        LSTMCell(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="needs rank"):
        make_cell("flstm", 3, 4)
    with pytest.raises(ValueError, match="needs groups"):
        make_cell("glstm", 4, 4)
    with pytest.raises(ValueError, match="input_size=3 must be divisible by groups=2"):
        make_cell("glstm", 3, 4, groups=2)
    with pytest.raises(ValueError, match="needs proj_size"):
        make_cell("lstmp", 3, 4)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\], got 1.5"):
        distlstm.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="unknown pooling"):
        SequenceRegressor(3, 4, pooling="sum")


def test_bad_factorized_and_grouped_options():
    with pytest.raises(ValueError, match="rank must be positive, got 0"):
        make_cell("flstm", 3, 4, rank=0)
    with pytest.raises(ValueError, match="rank must be positive, got -2"):
        make_cell("flstm", 3, 4, rank=-2)
    # W is 4n × (input + output) = 16 × 7 here: r may be at most 7
    with pytest.raises(ValueError, match=r"rank=8 is larger .* = 7"):
        make_cell("flstm", 3, 4, rank=8)
    make_cell("flstm", 3, 4, rank=7)
    with pytest.raises(ValueError, match="hidden_size=10 must be divisible by groups=4"):
        make_cell("glstm", 8, 10, groups=4)
    with pytest.raises(ValueError, match="proj_size=6 must be divisible by groups=4"):
        make_cell("glstm", 8, 16, groups=4, proj_size=6)
    with pytest.raises(ValueError, match=r"groups: a per-layer tuple needs one entry per layer \(num_layers=2\), "
                                         r"got length 3: \(4, 8, 16\)"):
        distlstm.LSTM(16, 32, 2, cell="glstm", groups=(4, 8, 16))
    with pytest.raises(ValueError, match=r"single_bias: a per-layer list .* \(num_layers=3\), got length 1"):
        distlstm.LSTM(16, 32, 3, single_bias=[True])
