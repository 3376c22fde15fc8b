"""single_bias, per-layer options and the forget-gate bias helper, for every cell."""

from __future__ import annotations

import pytest
import torch

import distlstm
from distlstm.models import CELLS, PeepholeLSTMCell, make_cell

D = torch.float64
OPTIONS = {"lstmp": {"proj_size": 2}, "flstm": {"rank": 3}, "glstm": {"groups": 2}}
FUSABLE = {"lstm", "lstmp", "sharpened"}


def merge_biases(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A two-bias state dict as single-bias: bias_ih ← bias_ih + bias_hh, bias_hh dropped."""
    out = dict(state_dict)
    for key in [k for k in state_dict if k.startswith("bias_hh")]:
        out[key.replace("bias_hh", "bias_ih")] = out[key.replace("bias_hh", "bias_ih")] + out.pop(key)
    return out


@pytest.mark.parametrize("name", sorted(CELLS))
def test_single_bias_equals_two_biases_with_the_same_sum(name):
    torch.manual_seed(0)
    fused_options = [True, False] if name in FUSABLE else [False]
    for fused in fused_options:
        two = distlstm.LSTM(4, 6, 2, batch_first=True, cell=name, fused=fused, dtype=D, **OPTIONS.get(name, {}))
        one = distlstm.LSTM(4, 6, 2, batch_first=True, cell=name, fused=fused, single_bias=True, dtype=D,
                            **OPTIONS.get(name, {}))
        one.load_state_dict(merge_biases(two.state_dict()))  # strict: the key sets must match
        assert "bias_ih_l1" in one.state_dict() and "bias_hh_l1" not in one.state_dict()
        x, lengths = torch.randn(3, 5, 4, dtype=D), torch.tensor([5, 2, 4])
        y1, s1 = one(x, lengths=lengths)
        y2, s2 = two(x, lengths=lengths)
        torch.testing.assert_close(y1, y2)
        for a, b in zip(s1, s2, strict=True):
            torch.testing.assert_close(a, b)
        w = torch.randn_like(y1)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        # ∂/∂b is the same whichever vector holds b
        torch.testing.assert_close(one.cells[0].bias_ih.grad, two.cells[0].bias_hh.grad)
        torch.testing.assert_close(one.cells[1].bias_ih.grad, two.cells[1].bias_ih.grad)


def test_single_bias_per_layer_and_fused_equals_loop():
    torch.manual_seed(1)
    fused = distlstm.LSTM(3, 5, 2, single_bias=(True, False), dtype=D)
    loop = distlstm.LSTM(3, 5, 2, single_bias=(True, False), fused=False, dtype=D)
    loop.load_state_dict(fused.state_dict())
    assert fused.cells[0].bias_hh is None and fused.cells[1].bias_hh is not None
    x = torch.randn(6, 2, 3, dtype=D)
    torch.testing.assert_close(fused(x)[0], loop(x)[0])


def test_per_layer_options_reach_their_layers():
    rnn = distlstm.LSTM(8, 16, 3, cell="sharpened", alpha=(1.0, 2.0, 3.0), proj_size=8)
    assert [c.alpha for c in rnn.cells] == [1.0, 2.0, 3.0]
    peep = distlstm.LSTM(4, 4, 2, cell="peephole", forget_gate=[False, True])
    assert [c.forget_gate for c in peep.cells] == [False, True]


GATED = [n for n in sorted(CELLS) if n != "rnn"]


@pytest.mark.parametrize("single_bias", [False, True])
@pytest.mark.parametrize("name", GATED)
def test_fill_forget_bias_sets_the_forget_gate(name, single_bias):
    """All weights 0, biases 0 but b_f = v, x = h = 0, c = 1: one step gives c = σ(α v) · 1 + σ(0)·tanh(0)."""
    cell = make_cell(name, 4, 6, single_bias=single_bias, dtype=D, **OPTIONS.get(name, {}))
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
    assert cell.fill_forget_bias_(2.5) is cell
    out = cell.output_size
    _, (_, c) = cell(torch.zeros(1, 4, dtype=D), (torch.zeros(1, out, dtype=D), torch.ones(1, 6, dtype=D)))
    expected = torch.sigmoid(torch.tensor(cell.alpha * 2.5, dtype=D))
    torch.testing.assert_close(c, expected.expand(1, 6))
    if cell.bias_hh is not None:
        b = cell.combined_bias()
        assert b is not None and int((b == 2.5).sum()) == 6 and int((b != 0).sum()) == 6


def test_fill_forget_bias_leaves_other_gates_and_zeroes_bias_hh():
    torch.manual_seed(2)
    rnn = distlstm.LSTM(6, 12, 2, cell="glstm", groups=(2, 3), proj_size=6)
    before = {k: v.clone() for k, v in rnn.state_dict().items()}
    rnn.fill_forget_bias_(1.0)
    for layer, k in enumerate((2, 3)):
        m = 12 // k
        b_ih = rnn.state_dict()[f"bias_ih_l{layer}"].view(k, 4, m)
        b_hh = rnn.state_dict()[f"bias_hh_l{layer}"].view(k, 4, m)
        assert torch.all(b_ih[:, 1] == 1.0) and torch.all(b_hh[:, 1] == 0.0)
        keep = [0, 2, 3]
        assert torch.equal(b_ih[:, keep], before[f"bias_ih_l{layer}"].view(k, 4, m)[:, keep])
        assert torch.equal(b_hh[:, keep], before[f"bias_hh_l{layer}"].view(k, 4, m)[:, keep])


def test_fill_forget_bias_refuses_cells_without_a_forget_gate_or_bias():
    with pytest.raises(ValueError, match="RNNCell has no forget gate"):
        distlstm.LSTM(3, 4, cell="rnn").fill_forget_bias_(1.0)
    with pytest.raises(ValueError, match=r"PeepholeLSTMCell has no forget gate \(gates \('i', 'g', 'o'\)\)"):
        PeepholeLSTMCell(3, 4, forget_gate=False).fill_forget_bias_(1.0)
    with pytest.raises(ValueError, match="no bias"):
        distlstm.LSTM(3, 4, bias=False).fill_forget_bias_(1.0)
