"""Masking, carried state and dropout of the sequence runner, for every cell."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import distlstm
from distlstm.models import CELLS, SequenceRegressor

D = torch.float64
OPTIONS = {"lstmp": {"proj_size": 2}, "flstm": {"rank": 3}, "glstm": {"groups": 2}}


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
def test_padded_batch_equals_each_sequence_alone(name, fused):
    torch.manual_seed(0)
    model = distlstm.LSTM(4, 6, 2, batch_first=True, cell=name, fused=fused, dtype=D, **OPTIONS.get(name, {}))
    lengths = torch.tensor([5, 1, 3, 4])
    x = torch.randn(4, 5, 4, dtype=D)
    x[1, 1:] = 1e3  # garbage in the padding must not leak
    y, state = model(x, lengths=lengths)
    for b, m in enumerate(lengths.tolist()):
        y_b, state_b = model(x[b : b + 1, :m])
        torch.testing.assert_close(y[b, :m], y_b[0])
        assert torch.all(y[b, m:] == 0)
        for s, s_b in zip(state, state_b, strict=True):
            torch.testing.assert_close(s[:, b], s_b[:, 0])


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       pooling=st.sampled_from(["mean", "max", "last"]))
def test_regressor_output_ignores_padding(lengths, pooling):
    torch.manual_seed(1)
    model = SequenceRegressor(2, 3, pooling=pooling).double()
    t = max(lengths)
    x = torch.randn(len(lengths), t, 2, dtype=D)
    d_hat = model(x, torch.tensor(lengths))
    for b, m in enumerate(lengths):
        torch.testing.assert_close(d_hat[b], model(x[b : b + 1, :m])[0])


@pytest.mark.parametrize("name", ["lstm", "peephole", "rnn"])
def test_carried_state_equals_one_long_run(name):
    """Stateful use: two halves with the state carried equal the whole sequence."""
    torch.manual_seed(2)
    model = distlstm.LSTM(3, 5, 2, batch_first=True, cell=name, dtype=D)
    x = torch.randn(2, 8, 3, dtype=D)
    y, state = model(x)
    y1, s1 = model(x[:, :5])
    y2, s2 = model(x[:, 5:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    for a, b in zip(s2, state, strict=True):
        torch.testing.assert_close(a, b)


def test_dropout_uses_the_given_generator_and_is_off_in_eval_mode():
    torch.manual_seed(3)
    model = distlstm.LSTM(3, 4, 3, dropout=0.5, batch_first=True)
    plain = distlstm.LSTM(3, 4, 3, dropout=0.0, batch_first=True)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 3)
    outs = []
    for _ in range(2):
        model.dropout_generator = torch.Generator().manual_seed(7)
        outs.append(model(x)[0])
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(outs[0], plain(x)[0])  # dropout is really applied in training
    model.dropout_generator = torch.Generator().manual_seed(8)
    assert not torch.allclose(model(x)[0], outs[0])  # another generator, another mask
    model.eval()
    torch.testing.assert_close(model(x)[0], plain(x)[0])  # eval mode: no dropout, whatever the generator


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_dropout_equals_loop_dropout_for_the_same_generator(monkeypatch, padded, bidirectional):
    """Training mode with dropout stays on ATen's kernel (one call per layer) and draws the loop's masks."""
    torch.manual_seed(3)
    fused = distlstm.LSTM(3, 5, 3, dropout=0.4, batch_first=True, bidirectional=bidirectional, proj_size=2, dtype=D)
    loop = distlstm.LSTM(3, 5, 3, dropout=0.4, batch_first=True, bidirectional=bidirectional, proj_size=2,
                         fused=False, dtype=D)
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(4, 6, 3, dtype=D)
    lengths = torch.tensor([6, 2, 5, 3]) if padded else None
    calls = []
    real_lstm = torch.lstm
    monkeypatch.setattr(torch, "lstm", lambda *a: calls.append(1) or real_lstm(*a))
    results = []
    for model in (fused, loop):
        model.dropout_generator = torch.Generator().manual_seed(11)
        y, (h, c) = model(x, lengths=lengths)
        (y.square().sum() + h.sum() + c.sum()).backward()
        results.append((y, h, c, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == 3  # the fused model only, one kernel call per layer
    (y1, h1, c1, g1), (y2, h2, c2, g2) = results
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], msg=name)
    fused.eval()
    assert not torch.allclose(fused(x, lengths=lengths)[0], y1)  # the masks did something
