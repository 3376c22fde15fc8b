"""The C++ peephole loops (``models/peephole_kernel.cpp``): built, equal to the ATen loops, and optional.

The layer-level equality with the generic loop runs in ``test_peephole_fused.py`` (every
test there runs on both loops); here: the kernel against the ATen loops on shapes that
cross its block boundaries, its sigmoid against ``torch.sigmoid``, when it applies, and
what happens where it cannot be built.
"""

from __future__ import annotations

import shutil
import stat
import warnings
from pathlib import Path

import pytest
import torch

from distlstm.models import peephole_kernel
from distlstm.models.peephole_fused import peephole_sequence

D = torch.float64
needs_compiler = pytest.mark.skipif(peephole_kernel._compiler() is None, reason="no C++ compiler on this machine")


@needs_compiler
def test_kernel_builds_where_a_compiler_is():
    """With a compiler present the kernel must load: a silent fallback would hide a broken build."""
    assert peephole_kernel.load() is not None
    assert peephole_kernel.applies(torch.zeros(12, 7, dtype=D))


def both_loops(x, h0, c0, w, p, lengths, has_bias=True, outputs=True):
    """Outputs, final state and the gradients of a loss on all three, on the kernel and on the ATen loops."""
    results = []
    for native in (True, False):
        previous = peephole_kernel.set_enabled(native)
        try:
            leaves = [t.clone().requires_grad_() for t in (x, h0, c0, w, p)]
            y, h, c = peephole_sequence(*leaves, has_bias=has_bias, lengths=lengths, outputs=outputs)
            gen = torch.Generator().manual_seed(99)
            loss = (h * torch.randn(h.shape, generator=gen, dtype=D)).sum() + (c ** 2).sum()
            if outputs:
                loss = loss + (y * torch.randn(y.shape, generator=gen, dtype=D)).sum()
            results.append([y, h, c, *torch.autograd.grad(loss, leaves)])
        finally:
            peephole_kernel.set_enabled(previous)
    return results


@needs_compiler
@pytest.mark.parametrize("gates", [3, 4])
@pytest.mark.parametrize(("batch", "lengths"), [(1, "full"), (7, "ragged"), (517, "ragged"), (1031, "full"),
                                                 (1031, "ragged")])
@pytest.mark.parametrize("has_bias", [True, False])
def test_kernel_equals_aten_loops(gates, batch, lengths, has_bias):
    """Across block boundaries (512 columns here), partial vectors, lengths 1..T, one or four gates' rows."""
    gen = torch.Generator().manual_seed(batch + gates)
    n, inputs, steps = 4, 3, 9
    x = torch.randn(steps, inputs, batch, generator=gen, dtype=D)
    w = torch.randn(gates * n, int(has_bias) + inputs + n, generator=gen, dtype=D)
    p = torch.randn(gates - 1, n, generator=gen, dtype=D)
    h0, c0 = torch.randn(2, n, batch, generator=gen, dtype=D)
    lens = torch.randint(1, steps + 1, (batch,), generator=gen) if lengths == "ragged" else None
    got, want = both_loops(x, h0, c0, w, p, lens, has_bias=has_bias)
    for g, expected in zip(got, want, strict=True):
        torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)


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
    got, want = both_loops(x, h0, c0, w, p, lens, outputs=False)
    for g, expected in zip(got, want, strict=True):
        torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)


@needs_compiler
def test_kernel_sigmoid_against_torch():
    """Within 4 ulp of torch.sigmoid across the range, exactly 0 < σ ≤ 1 at the clamps, NaN stays NaN."""
    kernel = peephole_kernel.load()
    assert kernel is not None
    extremes = torch.tensor([-800.0, -708.0, 0.0, 708.0, 800.0], dtype=D)
    a = torch.cat([torch.linspace(-40, 40, 100_001, dtype=D), extremes])
    got, want = kernel.sigmoid(a), torch.sigmoid(a)
    ulp = torch.finfo(D).eps * want.abs()
    assert bool(((got - want).abs() <= 4 * ulp + 1e-300).all()), float(((got - want).abs() / ulp).max())
    assert bool(((got >= 0) & (got <= 1)).all())
    assert kernel.sigmoid(torch.tensor([float("nan")], dtype=D)).isnan().all()


def test_where_the_kernel_applies():
    """float64 CPU cells up to MAX_WEIGHTS weights; float32, bigger cells and a disabled kernel run the ATen loops."""
    small = torch.zeros(12, 7, dtype=D)
    previous = peephole_kernel.set_enabled(False)
    try:
        assert not peephole_kernel.applies(small)
    finally:
        peephole_kernel.set_enabled(previous)
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
    for native in (True, False):
        previous = peephole_kernel.set_enabled(native)
        try:
            peephole_sequence(x, h0, c0, w, p, True, None)[1].sum().backward()
        finally:
            peephole_kernel.set_enabled(previous)
    assert calls == ["forward", "backward"]


def fake_compiler(folder: Path, script: str) -> str:
    path = folder / "fake-cxx"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_failing_compiler_is_reported(tmp_path, monkeypatch):
    """build() names the compiler and its message; load() warns once and returns None (the ATen loops run)."""
    cxx = fake_compiler(tmp_path, 'echo "fake-cxx: error: out of luck" >&2; exit 1\n')
    monkeypatch.setenv("CXX", cxx)
    with pytest.raises(RuntimeError, match="out of luck"):
        peephole_kernel.build(tmp_path / "cache")
    monkeypatch.setenv("DISTLSTM_CACHE", str(tmp_path / "cache"))
    peephole_kernel.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="C\\+\\+ peephole kernel is not available"):
            assert peephole_kernel.load() is None
        assert not peephole_kernel.applies(torch.zeros(12, 7, dtype=D))
    finally:
        peephole_kernel.load.cache_clear()


def test_disabled_by_environment_without_a_warning(monkeypatch):
    """DISTLSTM_NATIVE=0: no build, no warning, the ATen loops."""
    monkeypatch.setenv("DISTLSTM_NATIVE", "0")
    monkeypatch.setenv("CXX", "/nonexistent/compiler")
    peephole_kernel.load.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert peephole_kernel.load() is None
    finally:
        peephole_kernel.load.cache_clear()


@needs_compiler
def test_build_is_cached_and_keyed_by_compiler(tmp_path, monkeypatch):
    """A second build finds the first (not rebuilt); another compiler version builds its own library."""
    first = peephole_kernel.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert peephole_kernel.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    real = shutil.which(peephole_kernel._compiler() or "")
    assert real is not None
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, f'[ "$1" = --version ] && {{ echo "other 9.9"; exit 0; }}\n'
                                                      f'exec "{real}" "$@"\n'))
    second = peephole_kernel.build(tmp_path)
    assert second != first and sorted(p.name for p in tmp_path.glob("*.so")) == sorted([first.name, second.name])
