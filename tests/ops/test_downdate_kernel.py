"""The one-pass C++ downdate (``ops/downdate_kernel.cpp``) against ATen's one pass per row, bit for bit.

``kalman.downdate`` takes the kernel for a large float64 Σ; its numbers must be those of the
ATen passes exactly (a Kalman run must not change with the machine's compiler), so the
comparisons here are ``torch.equal``: on sizes around the vector width, across the thread
split, and under an ATen that rounds differently (``ATEN_CPU_CAPABILITY=default``).
Building and loading: ``tests/test_native.py``.
"""

from __future__ import annotations

import pytest
import torch

from distlstm import native
from distlstm.ops import downdate_kernel, kalman

D = torch.float64
kernel = downdate_kernel.load()
needs_kernel = pytest.mark.skipif(kernel is None, reason="the C++ downdate kernel is not built here (no compiler)")


def aten_downdate(P: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The ATen path, written out: one addcmul pass per row."""
    out = torch.addcmul(P, rows[0, :, None], rows[0, None, :], value=-1.0)
    for w in rows[1:]:
        out.addcmul_(w[:, None], w[None, :], value=-1.0)
    return out


def covariance(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=D)
    return A + A.mT  # exactly symmetric


@needs_kernel
@pytest.mark.parametrize("n", [1, 7, 8, 9, 256, 257, 263, 300])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8])
def test_kernel_equals_the_aten_passes_bit_for_bit(n, m):
    P = covariance(n, n + m)
    rows = torch.randn(m, n, generator=torch.Generator().manual_seed(m), dtype=D)
    assert kernel is not None
    got = kernel.downdate(P, rows, torch.full_like(P, float("nan")))
    assert torch.equal(got, aten_downdate(P, rows))
    assert torch.equal(got, got.mT)  # a symmetric Σ stays symmetric, entry for entry


@needs_kernel
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threads_split_a_large_covariance_alike(threads):
    """n² ≥ 2²² runs on several threads: their row ranges cover Σ once (no row left NaN, none twice)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, m in ((2048, 3), (2053, 2)):
            P, rows = covariance(n, m), torch.randn(m, n, dtype=D)
            assert kernel is not None
            assert torch.equal(kernel.downdate(P, rows, torch.full_like(P, float("nan"))), aten_downdate(P, rows))
    finally:
        torch.set_num_threads(previous)


def _downdate_in_child(queue) -> None:
    """In the forked child: ATen on one thread (GNU OpenMP threads do not survive a fork either), the kernel on two."""
    torch.set_num_threads(1)
    P, rows = covariance(2048, 0), torch.ones(3, 2048, dtype=D)
    out = torch.empty_like(P)
    assert kernel is not None
    kernel._downdate(2048, 3, P.data_ptr(), rows.data_ptr(), out.data_ptr(), 2)
    queue.put(bool(torch.equal(out, aten_downdate(P, rows))))


@needs_kernel
def test_a_forked_child_gets_its_own_threads():
    """A process forked after the kernel ran its threads (which the child does not inherit) still downdates."""
    import multiprocessing

    P, rows, out = covariance(2048, 0), torch.ones(3, 2048, dtype=D), torch.empty(2048, 2048, dtype=D)
    assert kernel is not None
    kernel._downdate(2048, 3, P.data_ptr(), rows.data_ptr(), out.data_ptr(), 2)  # threads ran in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_downdate_in_child, args=(queue,))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung in the downdate (waiting for threads it did not inherit)"
    assert child.exitcode == 0 and queue.get(timeout=5)


ROUNDING_PROBE = """
import torch
from distlstm.ops import downdate_kernel, kalman
n = downdate_kernel.MIN_SIZE
gen = torch.Generator().manual_seed(1)
A = torch.randn(n, n, generator=gen, dtype=torch.float64)
P, rows = A + A.mT, torch.randn(3, n, generator=gen, dtype=torch.float64)
want = torch.addcmul(P, rows[0, :, None], rows[0, None, :], value=-1.0)
for w in rows[1:]:
    want.addcmul_(w[:, None], w[None, :], value=-1.0)
print(torch.equal(kalman.downdate(P, rows), want), downdate_kernel.load() is not None, downdate_kernel.status())
"""


@needs_kernel
@pytest.mark.parametrize("capability", ["default", None])
def test_the_numbers_are_atens_whatever_its_cpu_kernel(capability):
    """ATen's default CPU kernel rounds P − w wᵀ twice (no fused multiply-add), the loop once: there the loop
    must not be used, and ``kalman.downdate`` still gives ATen's numbers; with ATen's own choice (AVX2 or
    AVX-512 here) the loop runs."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", ROUNDING_PROBE], env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    same, used, status = done.stdout.strip().split(" ", 2)
    assert same == "True"
    if capability == "default" and used == "False":
        assert status.startswith("ATen passes (the loop is built, but this ATen's addcmul rounds")
    if capability is None and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert used == "True" and status.startswith("C++ one-pass loop (")


@pytest.mark.parametrize("on", [True, False])
def test_kalman_downdate_gives_the_same_numbers_either_way(on):
    """``kalman.downdate`` on a Σ the kernel takes: the ATen numbers, kernel on or off."""
    P, rows = covariance(downdate_kernel.MIN_SIZE + 5, 2), torch.randn(3, downdate_kernel.MIN_SIZE + 5, dtype=D)
    with native.use(on):
        assert downdate_kernel.applies(P, rows) == (on and kernel is not None)
        assert torch.equal(kalman.downdate(P, rows), aten_downdate(P, rows))


def test_where_the_kernel_applies():
    """float64, CPU, contiguous Σ of at least MIN_SIZE rows, 2 to max_rows vectors; else the ATen passes."""
    n = downdate_kernel.MIN_SIZE
    P, rows = torch.zeros(n, n, dtype=D), torch.zeros(3, n, dtype=D)
    if kernel is None:
        assert not downdate_kernel.applies(P, rows)
        return
    assert downdate_kernel.applies(P, rows)
    assert not downdate_kernel.applies(P[:-1, :-1], rows[:, :-1])  # below MIN_SIZE
    assert not downdate_kernel.applies(P.float(), rows.float())
    assert not downdate_kernel.applies(torch.zeros(n, 2 * n, dtype=D)[:, ::2], rows)  # a strided Σ
    assert not downdate_kernel.applies(P, torch.zeros(kernel.max_rows + 1, n, dtype=D))
    assert not downdate_kernel.applies(P, rows[:1])  # rank 1: one ATen pass already
    with native.use(False):
        assert not downdate_kernel.applies(P, rows)


@needs_kernel
def test_kernel_rejects_wrong_shapes_types_and_aliasing():
    """The ctypes boundary checks every tensor: a wrong shape, dtype or layout is a ValueError, not a wild write."""
    assert kernel is not None
    P, rows, out = torch.zeros(4, 4, dtype=D), torch.zeros(2, 4, dtype=D), torch.zeros(4, 4, dtype=D)
    kernel.downdate(P, rows, out)  # the right ones pass
    for bad in (dict(rows=torch.zeros(2, 5, dtype=D)), dict(out=torch.zeros(4, 3, dtype=D)),
                dict(P=torch.zeros(4, 4)), dict(out=torch.zeros(4, 8, dtype=D)[:, ::2]),
                dict(rows=torch.zeros(0, 4, dtype=D)), dict(rows=torch.zeros(kernel.max_rows + 1, 4, dtype=D)),
                dict(out=P)):
        with pytest.raises(ValueError, match="downdate kernel"):
            kernel.downdate(**{"P": P, "rows": rows, "out": out, **bad})
