"""The one-node peephole sequence (``models/peephole_fused.py``) against the generic loop and finite differences.

Every test runs twice: on the C++ loops (``models/peephole_kernel.cpp``) and on the ATen loops.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import distlstm
from distlstm import native
from distlstm.models import SequenceRegressor, peephole_fused, peephole_kernel
from distlstm.models.peephole_fused import clear_workspace, peephole_layer, peephole_sequence

D = torch.float64


@pytest.fixture(autouse=True, params=["kernel", "aten"])
def loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> object:
    """Run the test on the C++ loops, then on the ATen loops (the kernel is skipped only without a compiler).

    Every workspace buffer comes back filled with NaN, so a value read before it is written
    (a kept buffer's old contents, fresh memory) shows in the results.
    """
    if request.param == "kernel" and peephole_kernel.load() is None:
        pytest.skip("the C++ kernel is not built here (no compiler: see test_peephole_kernel.py)")
    buffer = peephole_fused._buffer
    monkeypatch.setattr(peephole_fused, "_buffer", lambda *args: buffer(*args).fill_(float("nan")))
    with native.use(request.param == "kernel"):
        yield request.param


def twins(**options: object) -> tuple[distlstm.LSTM, distlstm.LSTM]:
    """A peephole LSTM on the fused path and the same weights on the generic loop."""
    torch.manual_seed(0)
    fused = distlstm.LSTM(3, 5, batch_first=True, cell="peephole", dtype=D, **options)  # type: ignore[arg-type]
    loop = distlstm.LSTM(3, 5, batch_first=True, cell="peephole", dtype=D, fused=False, **options)  # type: ignore[arg-type]
    with torch.no_grad():  # peepholes start at U(−1/√n, 1/√n): make them matter
        for p in fused.parameters():
            p.mul_(3)
    loop.load_state_dict(fused.state_dict())
    return fused, loop


def outputs_and_grads(model: distlstm.LSTM, x: torch.Tensor, lengths: torch.Tensor | None,
                      hx: tuple[torch.Tensor, ...] | None) -> list[torch.Tensor]:
    """Outputs, final state and the gradients of a loss touching all three w.r.t. input, state and parameters."""
    x = x.clone().requires_grad_()
    leaves = [x] + ([] if hx is None else [h.clone().requires_grad_() for h in hx])
    y, (h, c) = model(x, None if hx is None else tuple(leaves[1:]), lengths)
    weights = torch.linspace(-1, 2, y.numel(), dtype=D).view_as(y)
    loss = (y * weights).sum() + (h ** 2).sum() + (c * h).sum()
    return [y, h, c, *torch.autograd.grad(loss, leaves + list(model.parameters()))]


@pytest.mark.parametrize(("forget_gate", "alpha", "bias", "single_bias"),
                         [(True, 1.0, True, False), (False, 3.75, True, True), (True, 3.75, False, False),
                          (False, 1.0, True, False)])
@pytest.mark.parametrize("lengths", [None, [6, 6, 6, 6], [6, 2, 4, 1], [3, 5, 5, 4]], ids=str)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_fused_equals_loop(forget_gate, alpha, bias, single_bias, lengths, with_state):
    fused, loop = twins(forget_gate=forget_gate, alpha=alpha, bias=bias, single_bias=single_bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=gen, dtype=D)
    lens = None if lengths is None else torch.tensor(lengths)
    hx = (torch.randn(1, 4, 5, generator=gen, dtype=D), torch.randn(1, 4, 5, generator=gen, dtype=D)) \
        if with_state else None
    got, want = outputs_and_grads(fused, x, lens, hx), outputs_and_grads(loop, x, lens, hx)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_every_length_and_layout(steps):
    """Every combination of lengths 1..T, through two bidirectional layers (reverse direction included)."""
    fused, loop = twins(num_layers=2, bidirectional=True, forget_gate=False, alpha=3.75)
    gen = torch.Generator().manual_seed(2)
    lengths = torch.tensor(list(itertools.product(range(1, steps + 1), repeat=2))).flatten()
    x = torch.randn(len(lengths), steps, 3, generator=gen, dtype=D)
    for g, w in zip(outputs_and_grads(fused, x, lengths, None), outputs_and_grads(loop, x, lengths, None),
                    strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("forget_gate", [True, False])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]], ids=str)
def test_gradcheck(forget_gate, lengths):
    """Every input of the one-node sequence (x, h0, c0, W with bias column, p) against finite differences."""
    gen = torch.Generator().manual_seed(3)
    n, inputs, steps, batch = 2, 2, 4, 3
    gates = 4 if forget_gate else 3

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=D, requires_grad=True)

    x, h0, c0, w, p = r(steps, inputs, batch), r(n, batch), r(n, batch), r(gates * n, 1 + inputs + n), r(gates - 1, n)
    lens = None if lengths is None else torch.tensor(lengths)

    def f(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return peephole_sequence(*args, has_bias=True, lengths=lens)

    assert torch.autograd.gradcheck(f, (x, h0, c0, w, p))


def test_two_graphs_alive_keep_their_buffers():
    """A second forward before the first backward must not overwrite what the first saved (kept buffers)."""
    fused, loop = twins(forget_gate=False)
    gen = torch.Generator().manual_seed(4)
    x1, x2 = torch.randn(2, 4, 6, 3, generator=gen, dtype=D)
    grads = []
    for model in (fused, loop):
        y1, _ = model(x1)
        y2, _ = model(x2)  # same sizes: would reuse the first call's buffers if they were free
        with torch.no_grad():
            model(x2 * 2)  # and an evaluation in between
        grads.append(torch.autograd.grad((y1 ** 2).sum() + (y2 ** 3).sum(), list(model.parameters())))
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    clear_workspace()


def test_regressor_full_batch_gradient_matches_loop():
    """The matrix-batch network (no forget gate, α = 3.75, last-step pooling) on a padded batch."""
    torch.manual_seed(5)
    fused = SequenceRegressor(2, 4, cell="peephole", forget_gate=False, alpha=3.75, pooling="last",
                              head_bias=True).double()
    loop = SequenceRegressor(2, 4, cell="peephole", forget_gate=False, alpha=3.75, pooling="last",
                             head_bias=True).double()
    loop.load_state_dict(fused.state_dict())
    loop.rnn.fused = False
    gen = torch.Generator().manual_seed(6)
    x, target = torch.rand(20, 12, 2, generator=gen, dtype=D), torch.rand(20, generator=gen, dtype=D)
    lengths = torch.randint(8, 13, (20,), generator=gen)
    grads = [torch.autograd.grad(((m(x, lengths) - target) ** 2).mean(), list(m.parameters())) for m in (fused, loop)]
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_projected_peephole_uses_the_loop():
    """A projection (h = W_hr y) is not fused: the LSTM runs its generic loop, so outputs still match."""
    torch.manual_seed(7)
    model = distlstm.LSTM(3, 4, batch_first=True, cell="peephole", proj_size=2, dtype=D)
    x = torch.randn(2, 3, 3, dtype=D)
    y, _ = model(x)
    model.fused = False
    torch.testing.assert_close(y, model(x)[0], rtol=0, atol=0)


def test_peephole_layer_is_what_the_lstm_runs():
    """peephole_layer on a cell equals the cell's own step loop (sharpened, masked)."""
    torch.manual_seed(8)
    cell = distlstm.models.cells.PeepholeLSTMCell(3, 4, alpha=3.75, dtype=D)
    x, lengths = torch.randn(3, 5, 3, dtype=D), torch.tensor([5, 2, 4])
    state = cell.init_state(3)
    y, (h, c) = peephole_layer(cell, x, state, lengths)
    want_y, (want_h, want_c) = distlstm.models.run_layer(cell, x, state, lengths)
    torch.testing.assert_close(y, want_y, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(h, want_h, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(c, want_c, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("forget_gate", [True, False])
@pytest.mark.parametrize("lengths", [None, [5, 1, 3, 5, 2]], ids=str)
def test_without_outputs_same_state_and_gradients(forget_gate, lengths):
    """outputs=False (nothing written for y) gives the state and gradients of outputs=True for a loss on the state."""
    gen = torch.Generator().manual_seed(9)
    n, inputs, steps, batch = 3, 2, 5, 5
    gates = 4 if forget_gate else 3
    w = torch.randn(gates * n, 1 + inputs + n, generator=gen, dtype=D)
    p, x = torch.randn(gates - 1, n, generator=gen, dtype=D), torch.randn(steps, inputs, batch, generator=gen, dtype=D)
    h0, c0 = torch.randn(2, n, batch, generator=gen, dtype=D)
    lens = None if lengths is None else torch.tensor(lengths)
    results = []
    for outputs in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, h0, c0, w, p)]
        y, h, c = peephole_sequence(*leaves, has_bias=True, lengths=lens, outputs=outputs)
        assert y.numel() == (steps * n * batch if outputs else 0)
        loss = (h * torch.arange(batch, dtype=D)).sum() + (c ** 2).sum()
        results.append([h, c, *torch.autograd.grad(loss, leaves)])
    for g, want in zip(*results, strict=True):
        torch.testing.assert_close(g, want, rtol=0, atol=0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_last_pooling_reads_the_final_state(fused, num_layers):
    """A regressor pooling the last step (final_state, no outputs) equals head(pool(y, 'last')) of the full forward."""
    torch.manual_seed(10)
    model = SequenceRegressor(2, 3, num_layers, cell="peephole", forget_gate=False, alpha=3.75, pooling="last",
                              head_bias=True).double()
    model.rnn.fused = fused
    gen = torch.Generator().manual_seed(11)
    x, lengths = torch.randn(6, 7, 2, generator=gen, dtype=D), torch.tensor([7, 3, 1, 7, 5, 2])
    got = model(x, lengths)
    y, _ = model.rnn(x, None, lengths)
    want = model.head(distlstm.models.heads.pool(y, lengths, "last"))
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    grads = [torch.autograd.grad(out.sum(), list(model.parameters())) for out in (model(x, lengths),
             model.head(distlstm.models.heads.pool(model.rnn(x, None, lengths)[0], lengths, "last")))]
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_final_state_is_forwards_state():
    """LSTM.final_state equals forward's state, batched and unbatched, fused peephole and plain cells."""
    torch.manual_seed(12)
    for model in (distlstm.LSTM(3, 4, 2, cell="peephole", dtype=D), distlstm.LSTM(3, 4, dtype=D)):
        x = torch.randn(5, 2, 3, dtype=D)
        for inp, lens in ((x, torch.tensor([5, 3])), (x[:, 0], None)):
            for got, want in zip(model.final_state(inp, None, lens), model(inp, None, lens)[1], strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
