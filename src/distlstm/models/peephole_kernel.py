"""The C++ loops of the peephole sequence for small cells: built on first use, loaded with ctypes.

:mod:`~distlstm.models.peephole_fused` runs its forward and backward loops step by step
over the whole batch, one ATen op per line; for the matrix-batch network (n = 4, 10,000
sequences) each op is a pass over a few hundred kilobytes, twenty passes per step.
``peephole_kernel.cpp`` runs the same formulas on the same buffers, but block by block
of 128–512 sequences, all steps of a block with its state in cache, the blocks spread
over ``torch.get_num_threads()`` threads (measured in BENCHMARKS.md, "One full-batch
evaluation").

The source is built and loaded by :mod:`distlstm.native` (once per machine, cached,
refused from a shared folder). Where no compiler works, or with ``DISTLSTM_NATIVE=0``,
:func:`load` returns None and the ATen loops run (the same numbers to rounding, about
1.6× slower on the full-batch evaluation).
"""

from __future__ import annotations

import ctypes
import math
from functools import cache

import torch
from torch import Tensor

from distlstm import native

PACKAGE, SOURCE = "distlstm.models", "peephole_kernel.cpp"
#: Cells with more weights than this run the ATen loops: their per-step GEMMs are large enough
#: for BLAS to beat the kernel's plain loops, and the per-op overhead the kernel saves is small.
MAX_WEIGHTS = 16384


def kernel_for(weight: Tensor, *tensors: Tensor) -> Kernel | None:
    """The kernel if it runs a layer with this (G·n, K) folded weight (and these inputs), else None: all float64
    on the CPU, a cell of at most :data:`MAX_WEIGHTS` weights, the kernel enabled and built."""
    if not (native.enabled() and weight.numel() <= MAX_WEIGHTS
            and all(t.device.type == "cpu" and t.dtype == torch.float64 for t in (weight, *tensors))):
        return None
    return load()


def applies(weight: Tensor, *tensors: Tensor) -> bool:
    """Whether the kernel runs a layer with this weight and these inputs (:func:`kernel_for`)."""
    return kernel_for(weight, *tensors) is not None


def load() -> Kernel | None:
    """The built kernel, or None (with one warning saying why) where it cannot be built or loaded."""
    library = native.load(PACKAGE, SOURCE, "peephole kernel")
    return None if library is None else _kernel(library)


def status() -> str:
    """A line for ``distlstm info``: which loops small peephole layers run, and where the library is or why not."""
    return native.status(PACKAGE, SOURCE, "peephole kernel", "C++ loops", "ATen loops")


@cache
def _kernel(library: ctypes.CDLL) -> Kernel:
    return Kernel(library)


class Kernel:
    """The two loops of ``peephole_kernel.cpp``, called on contiguous float64 CPU tensors of checked shapes."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._forward = library.distlstm_peephole_forward
        self._forward.argtypes = [i64] * 6 + [ptr] + [i64] * 3 + [ptr] * 9 + [i64]
        self._forward.restype = None
        self._backward = library.distlstm_peephole_backward
        self._backward.argtypes = [i64] * 6 + [ptr] * 15 + [i64]
        self._backward.restype = None
        self._sigmoid = library.distlstm_sigmoid
        self._sigmoid.argtypes = [i64, ptr, ptr]
        self._sigmoid.restype = None

    def forward(self, x: Tensor, order: Tensor | None, W: Tensor, p_in: Tensor, p_o: Tensor, z: Tensor, acts: Tensor,
                cs: Tensor, tcs: Tensor, active: Tensor) -> None:
        """Copy x (T, F, B), any strides, column j from ``x[..., order[j]]``, into z; fill ``acts``, ``cs[1:]``,
        ``tcs`` and the h rows of ``z[1:]`` (see the C++ comment)."""
        steps, gates, n, batch = acts.shape
        features, K = x.shape[1], z.shape[1]
        _expect(x, (steps, features, batch), contiguous=False)
        _expect(W, (gates * n, K))
        _expect(p_in, ((gates - 2) * n,))
        _expect(p_o, (n,))
        for t, shape in ((z, (steps + 1, K, batch)), (cs, (steps + 1, n, batch)), (tcs, (steps, n, batch)),
                         (acts, (steps, gates, n, batch))):
            _expect(t, shape)
        _expect_index(active, steps)
        if order is not None:
            _expect_index(order, batch)
        s_t, s_f, s_b = x.stride()
        self._forward(steps, batch, gates, n, K, features, x.data_ptr(), s_b, s_t, s_f, _ptr(order),
                      *(_ptr(t) for t in (W, p_in, p_o, z, acts, cs, tcs, active)), torch.get_num_threads())

    def backward(self, z: Tensor, acts: Tensor, cs: Tensor, tcs: Tensor, w_h: Tensor, w_x: Tensor | None,
                 p_in: Tensor, p_o: Tensor, dys: Tensor | None, dh: Tensor, dc: Tensor, dweight: Tensor,
                 dpeep: Tensor, dx: Tensor | None, active: Tensor) -> None:
        """Turn δh_T, δc_T (in ``dh``, ``dc``) into δh_0, δc_0 and add ∇W, the peephole sums and δx."""
        steps, gates, n, batch = acts.shape
        K, R = z.shape[1], gates * n
        features = 0 if dx is None else dx.shape[1]
        for t, shape in ((z, (steps + 1, K, batch)), (cs, (steps + 1, n, batch)), (tcs, (steps, n, batch)),
                         (acts, (steps, gates, n, batch)), (w_h, (n, R)), (p_in, ((gates - 2) * n,)), (p_o, (n,)),
                         (dh, (n, batch)), (dc, (n, batch)), (dweight, (R, K)), (dpeep, (gates - 1, n))):
            _expect(t, shape)
        if dys is not None:
            _expect(dys, (steps, n, batch))
        if (w_x is None) != (dx is None):
            raise ValueError("peephole kernel: w_x and dx go together")
        if w_x is not None and dx is not None:
            _expect(w_x, (features, R))
            _expect(dx, (steps, features, batch))
        _expect_index(active, steps)
        self._backward(steps, batch, gates, n, K, features,
                       *(_ptr(t) for t in (z, acts, cs, tcs, w_h, w_x, p_in, p_o, dys, dh, dc, dweight, dpeep, dx,
                                           active)), torch.get_num_threads())

    def sigmoid(self, a: Tensor) -> Tensor:
        """σ(a) as the kernel computes it, for a contiguous float64 CPU ``a``."""
        _expect(a, tuple(a.shape))
        out = torch.empty_like(a)
        self._sigmoid(a.numel(), a.data_ptr(), out.data_ptr())
        return out


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _expect(t: Tensor, shape: tuple[int, ...], contiguous: bool = True) -> None:
    """A float64 CPU tensor of ``shape`` (numel-equal views accepted), contiguous unless told: else ValueError."""
    fits = t.numel() == math.prod(shape) and (t.shape == shape or len(shape) == 1)
    if not fits or t.dtype != torch.float64 or t.device.type != "cpu" or (contiguous and not t.is_contiguous()):
        raise ValueError(f"peephole kernel: expected a {'contiguous ' if contiguous else ''}float64 CPU tensor of "
                         f"shape {shape}, got {t.dtype} {tuple(t.shape)} on {t.device} "
                         f"(contiguous: {t.is_contiguous()})")


def _expect_index(t: Tensor, length: int) -> None:
    if t.dtype != torch.int64 or t.device.type != "cpu" or not t.is_contiguous() or t.shape != (length,):
        raise ValueError(f"peephole kernel: expected a contiguous int64 CPU index of length {length}, got {t.dtype} "
                         f"{tuple(t.shape)} on {t.device}")
