"""Fresh large tensors backed by transparent huge pages (Linux): one page fault per 2 MiB, not per 4 KiB.

The Kalman filters replace their covariance Σ (n × n) every step with a fresh tensor (a
state is never mutated). Above glibc's mmap threshold (at most 32 MiB) each such tensor
is a new mapping, and below it often a block glibc had returned to the system; the first
write to each of its 4 KiB pages then faults into the kernel, which zeroes the page: at
n_θ = 5,408 (hidden 32, 234 MB) that is 57,000 faults per update, most of the time of
one rank-1 downdate (``BENCHMARKS.md``, online section). Advising the fresh mapping
``MADV_HUGEPAGE`` before it is written lets the kernel back it with 2 MiB pages where
transparent huge pages are enabled as ``madvise`` or ``always``
(``/sys/kernel/mm/transparent_hugepage/enabled``), 512 times fewer faults. The advice
changes no value; where it is not available (another OS, THP ``never``, a failing call)
the tensor is the plain ``torch.empty_like``.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

import torch
from torch import Tensor

HUGE_PAGE = 2 << 20  # bytes of one x86-64 / arm64 transparent huge page
MADV_HUGEPAGE = 14  # <sys/mman.h>, Linux
#: Smaller tensors are left alone: their faults cost little (a 2.6 MiB Σ, hidden 8: at most 666, when
#: they happen). Whether glibc reuses a freed block of a few MiB without faults depends on the
#: allocation history: a 21.5 MiB Σ (hidden 16) faulted 5,500 times in some sequences of calls and
#: none in others, 4–16 ms against a 3 ms downdate; advised, none after the first few calls. A block of
#: 4–32 MiB may come from glibc's heap, where the advice outlives the tensor: harmless, later blocks
#: there are then backed by huge pages too.
MIN_BYTES = 4 << 20


@cache
def _madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's ``madvise`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def empty_like(t: Tensor) -> Tensor:
    """``torch.empty_like(t, memory_format=torch.contiguous_format)``, advised onto huge pages when large.

    Only the whole 2 MiB pages inside the tensor are advised, so no byte outside it is.
    """
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    if out.device.type != "cpu" or out.nbytes < MIN_BYTES:
        return out
    madvise = _madvise()
    if madvise is None:
        return out
    start = -(-out.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    end = (out.data_ptr() + out.nbytes) // HUGE_PAGE * HUGE_PAGE
    madvise(start, end - start, MADV_HUGEPAGE)  # advice only: a refusal (EINVAL where THP is off) changes nothing
    return out
