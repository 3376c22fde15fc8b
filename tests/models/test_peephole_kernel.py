"""The C++ peephole loops (``models/peephole_kernel.cpp``): built, equal to the ATen loops, and optional.

The layer-level equality with the generic loop runs in ``test_peephole_fused.py`` (every
test there runs on both loops); here: the kernel against the ATen loops on shapes that
cross its block boundaries, its sigmoid against ``torch.sigmoid``, its argument checks and
when it applies. Building, caching and what happens where it cannot be built:
``tests/test_native.py``.
"""

from __future__ import annotations

import pytest
import torch

from distlstm import native
from distlstm.models import peephole_kernel
from distlstm.models.peephole_fused import peephole_sequence

D = torch.float64
needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler on this machine")


def layer_inputs(gen, steps, inputs, batch, n, gates, has_bias=True):
    """x (T, F, B), h0, c0 (n, B), W (G·n, [1 +] F + n), p (G − 1, n): random float64."""
    x = torch.randn(steps, inputs, batch, generator=gen, dtype=D)
    w = torch.randn(gates * n, int(has_bias) + inputs + n, generator=gen, dtype=D) / (inputs + n) ** 0.5
    p = torch.randn(gates - 1, n, generator=gen, dtype=D)
    h0, c0 = torch.randn(2, n, batch, generator=gen, dtype=D)
    return x, h0, c0, w, p


@needs_compiler
def test_kernel_builds_where_a_compiler_is():
    """With a compiler present the kernel must load: a silent fallback would hide a broken build."""
    assert peephole_kernel.load() is not None
    assert peephole_kernel.applies(torch.zeros(12, 7, dtype=D))


def both_loops(x, h0, c0, w, p, lengths, has_bias=True, outputs=True):
    """Outputs, final state and the gradients of a loss on all three, on the kernel and on the ATen loops."""
    results = []
    for on in (True, False):
        with native.use(on):
            leaves = [t.clone().requires_grad_() for t in (x, h0, c0, w, p)]
            y, h, c = peephole_sequence(*leaves, has_bias=has_bias, lengths=lengths, outputs=outputs)
            gen = torch.Generator().manual_seed(99)
            loss = (h * torch.randn(h.shape, generator=gen, dtype=D)).sum() + (c ** 2).sum()
            if outputs:
                loss = loss + (y * torch.randn(y.shape, generator=gen, dtype=D)).sum()
            results.append([y, h, c, *torch.autograd.grad(loss, leaves)])
    return results


@needs_compiler
@pytest.mark.parametrize("gates", [3, 4])
@pytest.mark.parametrize(("batch", "lengths"), [(1, "full"), (7, "ragged"), (517, "ragged"), (1031, "full"),
                                                 (1031, "ragged")])
@pytest.mark.parametrize("has_bias", [True, False])
def test_kernel_equals_aten_loops(gates, batch, lengths, has_bias):
    """Across block boundaries (512 columns here), partial vectors, lengths 1..T, one or four gates' rows."""
    gen = torch.Generator().manual_seed(batch + gates)
    steps = 9
    x, h0, c0, w, p = layer_inputs(gen, steps, 3, batch, 4, gates, has_bias)
    lens = torch.randint(1, steps + 1, (batch,), generator=gen) if lengths == "ragged" else None
    assert_same(both_loops(x, h0, c0, w, p, lens, has_bias=has_bias))


def assert_same(results, tol=1e-12):
    got, want = results
    assert len(got) == len(want)
    for g, expected in zip(got, want, strict=True):
        torch.testing.assert_close(g, expected, rtol=tol, atol=tol)


@needs_compiler
@pytest.mark.parametrize(("n", "inputs", "batch"), [(16, 8, 300), (32, 2, 200), (16, 40, 9)])
def test_kernel_equals_aten_loops_for_wider_cells(n, inputs, batch):
    """Blocks of 256 and 128 columns (G·n = 64, 128 rows), K > 8 (∇W in several column chunks), forget gate."""
    gen = torch.Generator().manual_seed(n + batch)
    x, h0, c0, w, p = layer_inputs(gen, 7, inputs, batch, n, 4)
    lens = torch.randint(1, 8, (batch,), generator=gen)
    assert_same(both_loops(x, h0, c0, w, p, lens))


@needs_compiler
@pytest.mark.parametrize(("steps", "inputs", "batch", "has_bias"), [(3, 1, 1, True), (2, 1, 2, False), (4, 0, 3, True),
                                                                      (0, 2, 3, True), (5, 2, 1, False)])
def test_kernel_on_tiny_and_empty_layers(steps, inputs, batch, has_bias):
    """A batch of one or two, one input or none, no steps: where z ends right after the last block's values."""
    gen = torch.Generator().manual_seed(steps * 10 + batch)
    x, h0, c0, w, p = layer_inputs(gen, steps, inputs, batch, 4, 3, has_bias)
    assert_same(both_loops(x, h0, c0, w, p, None, has_bias=has_bias))


@needs_compiler
def test_threads_give_the_same_numbers():
    """Blocks on one or two threads: bit for bit (each block keeps its own sums, added in block order)."""
    gen = torch.Generator().manual_seed(5)
    x, h0, c0, w, p = layer_inputs(gen, 6, 2, 1500, 4, 3)
    lens = torch.randint(1, 7, (1500,), generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = both_loops(x, h0, c0, w, p, lens)[0]
        torch.set_num_threads(2)
        two = both_loops(x, h0, c0, w, p, lens)[0]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@needs_compiler
def test_non_contiguous_weights_and_peepholes():
    """A transposed weight and a strided peephole tensor: the kernel gets contiguous copies, same numbers."""
    gen = torch.Generator().manual_seed(6)
    x, h0, c0, w, p = layer_inputs(gen, 5, 2, 7, 3, 4)
    w_t = w.t().contiguous().t()
    p_strided = torch.stack([p, p], -1)[..., 0]
    assert not w_t.is_contiguous() and not p_strided.is_contiguous()
    assert_same(both_loops(x, h0, c0, w_t, p_strided, None))


@needs_compiler
def test_kernel_reads_a_batch_first_input_in_place():
    """x as the (T, F, B) view of a batch-first tensor, sorted by length: gathered by the kernel, same numbers."""
    gen = torch.Generator().manual_seed(1)
    batch, steps, inputs, n = 600, 6, 2, 3
    x = torch.randn(batch, steps, inputs, generator=gen, dtype=D).permute(1, 2, 0)
    w = torch.randn(3 * n, 1 + inputs + n, generator=gen, dtype=D)
    p = torch.randn(2, n, generator=gen, dtype=D)
    h0, c0 = torch.zeros(2, n, batch, dtype=D)
    lens = torch.randint(1, steps + 1, (batch,), generator=gen)
    assert_same(both_loops(x, h0, c0, w, p, lens, outputs=False))


@needs_compiler
def test_kernel_sigmoid_against_torch():
    """Within 4 ulp of torch.sigmoid on [−700, 700]; beyond the ±708 clamp 1, or below 1e-307; NaN stays NaN."""
    kernel = peephole_kernel.load()
    assert kernel is not None
    a = torch.cat([torch.linspace(-40, 40, 100_001, dtype=D), torch.linspace(-700, 700, 20_001, dtype=D)])
    got, want = kernel.sigmoid(a), torch.sigmoid(a)
    ulps = (got - want).abs() / (torch.finfo(D).eps * want.abs())
    assert float(ulps.max()) <= 4, float(ulps.max())
    tails = kernel.sigmoid(torch.tensor([-800.0, -745.0, -709.0, 709.0, 745.0, 800.0], dtype=D))
    assert bool((tails[:3] >= 0).all() and (tails[:3] < 1e-307).all()) and bool((tails[3:] == 1).all())
    assert kernel.sigmoid(torch.tensor([float("nan")], dtype=D)).isnan().all()


def test_where_the_kernel_applies():
    """float64 CPU cells up to MAX_WEIGHTS weights; float32, bigger cells and a disabled kernel run the ATen loops."""
    small = torch.zeros(12, 7, dtype=D)
    with native.use(False):
        assert not peephole_kernel.applies(small)
    assert not peephole_kernel.applies(small.float())
    assert not peephole_kernel.applies(torch.zeros(peephole_kernel.MAX_WEIGHTS + 1, 1, dtype=D))


@needs_compiler
def test_the_kernel_path_runs_the_kernel(monkeypatch):
    """With the kernel enabled a small float64 layer calls it, forward and backward; disabled, it does not."""
    calls: list[str] = []
    kernel = peephole_kernel.load()
    assert kernel is not None
    for name in ("forward", "backward"):
        original = getattr(kernel, name)
        monkeypatch.setattr(kernel, name, lambda *a, _o=original, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    x, h0, c0 = torch.randn(3, 2, 5, dtype=D), torch.zeros(2, 5, dtype=D), torch.zeros(2, 5, dtype=D)
    w, p = torch.randn(6, 5, dtype=D, requires_grad=True), torch.randn(2, 2, dtype=D)
    for on in (True, False):
        with native.use(on):
            peephole_sequence(x, h0, c0, w, p, True, None)[1].sum().backward()
    assert calls == ["forward", "backward"]


def test_kernel_rejects_wrong_shapes_and_types():
    """The ctypes boundary checks every tensor: a wrong shape or dtype is a ValueError, not a wild read."""
    kernel = peephole_kernel.load()
    if kernel is None:
        pytest.skip("no kernel")
    steps, gates, n, batch, K = 3, 3, 2, 4, 5
    args = dict(x=torch.zeros(steps, 2, batch, dtype=D), order=None, W=torch.zeros(gates * n, K, dtype=D),
                p_in=torch.zeros(n, dtype=D), p_o=torch.zeros(n, dtype=D), z=torch.zeros(steps + 1, K, batch, dtype=D),
                acts=torch.zeros(steps, gates, n, batch, dtype=D), cs=torch.zeros(steps + 1, n, batch, dtype=D),
                tcs=torch.zeros(steps, n, batch, dtype=D), active=torch.full((steps,), batch))
    kernel.forward(**args)  # the right ones pass
    for name, bad in (("W", torch.zeros(gates * n, K + 1, dtype=D)), ("z", torch.zeros(steps, K, batch, dtype=D)),
                      ("cs", torch.zeros(steps + 1, n, batch)), ("active", torch.full((steps,), 4.0, dtype=D)),
                      ("tcs", torch.zeros(batch, n, steps, dtype=D).transpose(0, 2))):
        with pytest.raises(ValueError, match="peephole kernel: expected"):
            kernel.forward(**{**args, name: bad})
