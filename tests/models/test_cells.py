"""Cells against independent references: torch.nn.LSTM / nn.RNN, hand-written steps, reductions."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import distlstm
from distlstm.models import CELLS, LSTMCell, PeepholeLSTMCell, make_cell

D = torch.float64


def packed_reference(ref: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    """nn.LSTM/nn.RNN on a padded batch via packed sequences (its own masking)."""
    out, state = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return y, state


SHAPES = [  # (input, hidden, layers, proj, batch, steps)
    (3, 5, 1, 0, 4, 7),
    (6, 8, 2, 0, 3, 5),
    (4, 9, 3, 4, 5, 6),
    (2, 16, 1, 0, 1, 1),
]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
@pytest.mark.parametrize(("i", "h", "layers", "proj", "b", "t"), SHAPES)
def test_lstm_matches_nn_lstm_outputs_states_and_grads(fused, i, h, layers, proj, b, t):
    torch.manual_seed(0)
    ref = nn.LSTM(i, h, layers, batch_first=True, proj_size=proj).to(D)
    ours = distlstm.LSTM(i, h, layers, batch_first=True, proj_size=proj, fused=fused, dtype=D)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(b, t, i, dtype=D)
    lengths = torch.randint(1, t + 1, (b,))
    lengths[0] = t
    h0 = torch.randn(layers, b, proj or h, dtype=D)
    c0 = torch.randn(layers, b, h, dtype=D)

    y, (h_n, c_n) = ours(x, (h0, c0), lengths=lengths)
    y_ref, (h_ref, c_ref) = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),
                                (h0, c0))
    y_ref, _ = pad_packed_sequence(y_ref, batch_first=True, total_length=t)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, h_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_n, c_ref, atol=1e-12, rtol=0)

    w = torch.randn_like(y)
    ((y * w).sum() + h_n.sum() + c_n.square().sum()).backward()
    ((y_ref * w).sum() + h_ref.sum() + c_ref.square().sum()).backward()
    grads = dict(ours.named_parameters())
    assert set(grads) == set(dict(ref.named_parameters()))
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-10, rtol=0)


def test_time_major_and_unbatched_layouts_match_nn_lstm():
    torch.manual_seed(1)
    ref = nn.LSTM(3, 4, 2).to(D)
    ours = distlstm.LSTM(3, 4, 2, fused=False, dtype=D)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3, dtype=D)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    torch.testing.assert_close(ours(x[:, 0])[0], ref(x[:, 0])[0])
    torch.testing.assert_close(ours(x[:, 0])[1][1], ref(x[:, 0])[1][1])


def test_packed_sequence_input_round_trips():
    torch.manual_seed(2)
    ref = nn.LSTM(3, 4, batch_first=True).to(D)
    ours = distlstm.LSTM(3, 4, batch_first=True, fused=False, dtype=D)
    ours.load_state_dict(ref.state_dict())
    x, lengths = torch.randn(3, 5, 3, dtype=D), torch.tensor([2, 5, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = ours(packed)
    torch.testing.assert_close(pad_packed_sequence(out, batch_first=True)[0],
                               pad_packed_sequence(ref(packed)[0], batch_first=True)[0])


def test_state_dict_moves_both_ways():
    ours = distlstm.LSTM(3, 6, 2, proj_size=2)
    ref = nn.LSTM(3, 6, 2, proj_size=2)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    for (k, a), (k2, b) in zip(sorted(ours.state_dict().items()), sorted(ref.state_dict().items()), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_rnn_cell_matches_nn_rnn():
    torch.manual_seed(3)
    ref = nn.RNN(4, 5, 2, batch_first=True).to(D)
    ours = distlstm.LSTM(4, 5, 2, batch_first=True, cell="rnn", dtype=D)
    ours.load_state_dict(ref.state_dict())
    x, lengths = torch.randn(3, 6, 4, dtype=D), torch.tensor([6, 2, 4])
    y, (h_n,) = ours(x, lengths=lengths)
    y_ref, h_ref = packed_reference(ref, x, lengths)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h_n, h_ref)


def test_sharpened_alpha_one_equals_plain_cell():
    torch.manual_seed(4)
    plain = LSTMCell(3, 5, dtype=D)
    sharp = make_cell("sharpened", 3, 5, alpha=1.0, dtype=D)
    sharp.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, dtype=D)
    torch.testing.assert_close(sharp(x)[0], plain(x)[0], atol=0, rtol=0)


def reference_sharpened_step(cell: LSTMCell, x, h, c, alpha):
    """Textbook step with σ(α a) gates, written independently of lstm_pointwise."""
    a = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    n = cell.hidden_size
    i = 1 / (1 + torch.exp(-alpha * a[:, :n]))
    f = 1 / (1 + torch.exp(-alpha * a[:, n : 2 * n]))
    g = torch.tanh(a[:, 2 * n : 3 * n])
    o = 1 / (1 + torch.exp(-alpha * a[:, 3 * n :]))
    c = f * c + i * g
    return o * torch.tanh(c), c


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
def test_sharpened_gates_match_hand_written_step(fused):
    torch.manual_seed(5)
    model = distlstm.LSTM(3, 4, batch_first=True, cell="sharpened", alpha=3.75, fused=fused, dtype=D)
    cell = model.cells[0]
    x = torch.randn(2, 5, 3, dtype=D)
    h = c = torch.zeros(2, 4, dtype=D)
    ys = []
    for t in range(5):
        h, c = reference_sharpened_step(cell, x[:, t], h, c, 3.75)
        ys.append(h)
    y, (_h_n, c_n) = model(x)
    torch.testing.assert_close(y, torch.stack(ys, 1))
    torch.testing.assert_close(c_n[0], c)


@pytest.mark.parametrize("forget_gate", [True, False])
def test_peephole_cell_matches_hand_written_step(forget_gate):
    torch.manual_seed(6)
    cell = PeepholeLSTMCell(3, 4, forget_gate=forget_gate, alpha=2.0, dtype=D)
    x, h, c = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D), torch.randn(5, 4, dtype=D)
    a = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    p, n = cell.weight_ch, 4
    sig = lambda z: 1 / (1 + torch.exp(-2.0 * z))  # noqa: E731
    if forget_gate:
        i, f, g, o = (a[:, k * n : (k + 1) * n] for k in range(4))
        c_new = sig(f + p[1] * c) * c + sig(i + p[0] * c) * torch.tanh(g)
    else:
        i, g, o = (a[:, k * n : (k + 1) * n] for k in range(3))
        c_new = c + sig(i + p[0] * c) * torch.tanh(g)
    y_ref = sig(o + p[-1] * c_new) * torch.tanh(c_new)
    y, (_h_new, c_out) = cell(x, (h, c))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(c_out, c_new)
    assert cell.weight_ih.shape[0] == (4 if forget_gate else 3) * 4


def test_peephole_with_zero_peepholes_equals_plain_lstm():
    torch.manual_seed(7)
    peep = PeepholeLSTMCell(3, 4, dtype=D)
    plain = LSTMCell(3, 4, dtype=D)
    state = {k: v for k, v in peep.state_dict().items() if k != "weight_ch"}
    plain.load_state_dict(state)
    with torch.no_grad():
        peep.weight_ch.zero_()
    x = torch.randn(2, 3, dtype=D)
    torch.testing.assert_close(peep(x)[0], plain(x)[0])


CELL_OPTIONS = {"lstmp": {"proj_size": 2}, "flstm": {"rank": 3}, "glstm": {"groups": 2}}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck_every_cell(name):
    torch.manual_seed(11)
    cell = make_cell(name, 4, 4, dtype=D, **CELL_OPTIONS.get(name, {}))
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in cell.parameters())
    x = torch.randn(2, 3, 4, dtype=D, requires_grad=True)

    def f(x, *ps):
        _y, state = functional_call(cell, dict(zip(names, ps, strict=True)), (x[:, 0],))
        y2, _ = functional_call(cell, dict(zip(names, ps, strict=True)), (x[:, 1], state))
        return y2

    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_cell_runs_in_float32_and_float64(name):
    for dtype in (torch.float32, torch.float64):
        model = distlstm.LSTM(4, 4, 2, batch_first=True, cell=name, dtype=dtype, **CELL_OPTIONS.get(name, {}))
        y, state = model(torch.randn(2, 3, 4, dtype=dtype))
        assert y.dtype == dtype and all(s.dtype == dtype for s in state)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("proj", [0, 2])
def test_no_bias_matches_nn_lstm(proj):
    torch.manual_seed(12)
    ref = nn.LSTM(3, 4, 2, bias=False, batch_first=True, proj_size=proj).to(D)
    for fused in (True, False):
        ours = distlstm.LSTM(3, 4, 2, bias=False, batch_first=True, proj_size=proj, fused=fused, dtype=D)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, 5, 3, dtype=D)
        torch.testing.assert_close(ours(x)[0], ref(x)[0])
