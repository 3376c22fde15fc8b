"""The covariance downdate Σ − Σ_k w_k w_kᵀ in one pass over Σ (C++, built on first use, loaded with ctypes).

:func:`distlstm.ops.kalman.downdate` makes one elementwise pass over Σ per row w_k; a
Kalman covariance of hidden 32 (n_θ = 5,408, 223 MB) is far beyond the caches, so the
DEKF's rank-3 update read and wrote Σ three times from memory where the EKF's rank-1
update does it once. ``downdate_kernel.cpp`` computes each output row from all the
w_k while the row is in registers, with the same fused multiply-adds in the same order:
the numbers are the ATen path's bit for bit (tested), Σ is read once and written once.
That holds where ATen's ``addcmul`` rounds once (a fused multiply-add, as its AVX2 and
AVX-512 kernels do); :func:`load` checks it on a small downdate and, where ATen rounds
twice (``ATEN_CPU_CAPABILITY=default``, a CPU without FMA), keeps the ATen passes, so a
Kalman run's numbers never depend on whether the loop was built. Built and loaded by
:mod:`distlstm.native`; without a compiler, or with ``DISTLSTM_NATIVE=0``, the ATen
passes run.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch
from torch import Tensor

from distlstm import native

PACKAGE, SOURCE, WHAT = "distlstm.ops", "downdate_kernel.cpp", "downdate kernel"
#: Smaller covariances take the ATen path: Σ and its fresh copy fit in the last-level cache, where
#: the later passes cost little. From an 8 MiB Σ up the loop's one pass pays: a DEKF step at
#: hidden 16 (n_θ = 1,680, 21.5 MiB) took about 31 ms with it against 40 ms with the ATen passes,
#: at hidden 8 (584) the same either way (BENCHMARKS.md, online section).
MIN_SIZE = 1024


class Kernel:
    """``distlstm_downdate`` of ``downdate_kernel.cpp``, called on float64 CPU tensors of checked shapes."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._downdate = library.distlstm_downdate
        self._downdate.argtypes = [i64, i64, ptr, ptr, ptr, i64]
        self._downdate.restype = None
        max_rows = library.distlstm_downdate_max_rows
        max_rows.restype = i64
        self.max_rows = int(max_rows())

    def downdate(self, P: Tensor, rows: Tensor, out: Tensor) -> Tensor:
        """Write Σ − Σ_k w_k w_kᵀ into ``out`` and return it: P, out (n, n) and rows (m, n) contiguous float64."""
        n, m = P.shape[0], rows.shape[0]
        for name, t, shape in (("P", P, (n, n)), ("rows", rows, (m, n)), ("out", out, (n, n))):
            if t.shape != shape or t.dtype != torch.float64 or t.device.type != "cpu" or not t.is_contiguous():
                raise ValueError(f"downdate kernel: {name} must be a contiguous float64 CPU tensor of shape {shape}, "
                                 f"got {t.dtype} {tuple(t.shape)} on {t.device} (contiguous: {t.is_contiguous()})")
        if not 1 <= m <= self.max_rows:
            raise ValueError(f"downdate kernel: 1 to {self.max_rows} rows, got {m}")
        if out.untyped_storage().data_ptr() in (P.untyped_storage().data_ptr(), rows.untyped_storage().data_ptr()):
            raise ValueError("downdate kernel: out must be a fresh tensor, not P or rows or a view of them")
        self._downdate(n, m, P.data_ptr(), rows.data_ptr(), out.data_ptr(), torch.get_num_threads())
        return out


def kernel_for(P: Tensor, rows: Tensor) -> Kernel | None:
    """The kernel if it runs this downdate, else None: float64 on the CPU, a contiguous Σ of at least
    :data:`MIN_SIZE` rows, 2 to ``max_rows`` vectors, the kernel enabled and built.

    A rank-1 downdate is one ATen pass already (the loop measured 0.7–1.0× its speed).
    """
    if not (native.enabled() and P.shape[0] >= MIN_SIZE and P.dtype == rows.dtype == torch.float64
            and P.device.type == rows.device.type == "cpu" and P.is_contiguous()):
        return None
    kernel = load()
    return kernel if kernel is not None and 2 <= rows.shape[0] <= kernel.max_rows else None


def applies(P: Tensor, rows: Tensor) -> bool:
    """Whether the kernel runs this downdate (:func:`kernel_for`)."""
    return kernel_for(P, rows) is not None


def aten_passes(P: Tensor, rows: Tensor, out: Tensor) -> Tensor:
    """Σ − Σ_k w_k w_kᵀ into ``out`` as one ATen ``addcmul`` pass per row (the first from P, the others in
    place): the path for every Σ the kernel does not take, and the numbers the kernel must equal."""
    torch.addcmul(P, rows[0, :, None], rows[0, None, :], value=-1.0, out=out)
    for w in rows[1:]:
        out.addcmul_(w[:, None], w[None, :], value=-1.0)
    return out


def load() -> Kernel | None:
    """The built kernel, or None where it cannot be built or loaded (with one warning saying why) or where it
    would not give ATen's numbers (see the module docstring)."""
    library = native.load(PACKAGE, SOURCE, WHAT)
    return None if library is None else _kernel(library)


#: Why the built loop is not used where ATen's addcmul rounds twice (``distlstm info``).
UNFUSED = ("the loop is built, but this ATen's addcmul rounds P − w wᵀ twice where the loop rounds once "
           "(its default CPU kernel, no fused multiply-add); the ATen passes keep the numbers the same")


def status() -> str:
    """A line for ``distlstm info``: which path Kalman downdates take, and where the library is or why not."""
    line = native.status(PACKAGE, SOURCE, WHAT, "C++ one-pass loop", "ATen passes")
    return f"ATen passes ({UNFUSED})" if line.startswith("C++") and load() is None else line


@cache
def _kernel(library: ctypes.CDLL) -> Kernel | None:
    kernel = Kernel(library)
    return kernel if rounds_as_aten(kernel) else None


def rounds_as_aten(kernel: Kernel) -> bool:
    """Whether the loop gives ATen's addcmul passes bit for bit, on a 37 × 37 downdate of rank 3 (vector lanes
    and a tail): true where ATen fuses the multiply-add, false where it rounds twice."""
    gen = torch.Generator().manual_seed(0)
    P = torch.randn(37, 37, generator=gen, dtype=torch.float64)
    rows = torch.randn(3, 37, generator=gen, dtype=torch.float64)
    return torch.equal(kernel.downdate(P, rows, torch.empty_like(P)), aten_passes(P, rows, torch.empty_like(P)))
