"""The C++ loops of the peephole sequence for small cells: built on first use, loaded with ctypes.

:mod:`~distlstm.models.peephole_fused` runs its forward and backward loops step by step
over the whole batch, one ATen op per line; for the matrix-batch network (n = 4, 10,000
sequences) each op is a pass over a few hundred kilobytes, twenty passes per step.
``peephole_kernel.cpp`` runs the same formulas on the same buffers, but block by block
of 64 sequences, all steps of a block with its state in L1 (measured in BENCHMARKS.md,
"full-batch evaluation").

The source is compiled once per machine with the host C++ compiler (``$CXX``, else
``g++``, ``c++`` or ``clang++``) into ``$DISTLSTM_CACHE`` (default
``~/.cache/distlstm``), under a name that hashes the source, the flags, the compiler
and the CPU, so a changed kernel or machine builds anew; processes that build at the
same time each write their own file and rename it into place. It includes no torch
header: a build takes about a second. Where no compiler works, or with
``DISTLSTM_NATIVE=0``, :func:`load` returns None and the ATen loops run (the same
numbers to rounding, about 2× slower there).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

SOURCE = "peephole_kernel.cpp"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
#: Cells with more weights than this run the ATen loops: their per-step GEMMs are large enough
#: for BLAS to beat the kernel's plain loops, and the per-op overhead the kernel saves is small.
MAX_WEIGHTS = 16384

_enabled = os.environ.get("DISTLSTM_NATIVE", "1") != "0"


def set_enabled(enabled: bool) -> bool:
    """Use the C++ loops where they apply (True, the default) or always the ATen loops; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def applies(weight: Tensor) -> bool:
    """Whether the kernel runs a layer with this (G·n, K) folded weight: float64 on the CPU, a small cell, built."""
    return (_enabled and weight.device.type == "cpu" and weight.dtype == torch.float64
            and weight.numel() <= MAX_WEIGHTS and load() is not None)


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (Linux), else the platform's name."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() + platform.machine()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(lines)))


def _cache_dir() -> Path:
    root = os.environ.get("DISTLSTM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "distlstm")
    return Path(root) / "kernels"


def build(directory: Path | None = None) -> Path:
    """Compile the kernel (unless an identical build is there) and return the shared library's path.

    Raises:
        RuntimeError: no C++ compiler found, or the compiler failed (its output is in the message).
    """
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
    source = resources.files("distlstm.models").joinpath(SOURCE).read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    directory = directory or _cache_dir()
    target = directory / f"peephole-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / SOURCE
        src.write_bytes(source)
        out = Path(work) / target.name
        done = subprocess.run([compiler, *FLAGS, "-o", str(out), str(src)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {SOURCE}:\n{done.stderr.strip()}")
        os.replace(out, target)  # atomic: a concurrent build of the same source writes the same bytes
    return target


class Kernel:
    """The two loops of ``peephole_kernel.cpp``, called on contiguous float64 CPU tensors."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._forward = library.distlstm_peephole_forward
        self._forward.argtypes = [i64] * 6 + [ptr] + [i64] * 3 + [ptr] * 9
        self._forward.restype = None
        self._backward = library.distlstm_peephole_backward
        self._backward.argtypes = [i64] * 6 + [ptr] * 15
        self._backward.restype = None
        self._sigmoid = library.distlstm_sigmoid
        self._sigmoid.argtypes = [i64, ptr, ptr]
        self._sigmoid.restype = None

    def forward(self, x: Tensor, order: Tensor | None, W: Tensor, p_in: Tensor, p_o: Tensor, z: Tensor, acts: Tensor,
                cs: Tensor, tcs: Tensor, active: Tensor) -> None:
        """Copy x (T, F, B), any strides, column j from ``x[..., order[j]]``, into z; fill ``acts``, ``cs[1:]``,
        ``tcs`` and the h rows of ``z[1:]`` (see the C++ comment)."""
        steps, gates, n, batch = acts.shape
        if x.dtype != torch.float64 or x.device.type != "cpu" or x.shape != (steps, x.shape[1], batch):
            raise ValueError(f"peephole kernel: expected a float64 CPU x of shape (T, F, B), got {x.dtype} "
                             f"{tuple(x.shape)} on {x.device}")
        _check(W, p_in, p_o, z, acts, cs, tcs, active, *(() if order is None else (order,)))
        s_t, s_f, s_b = x.stride()
        self._forward(steps, batch, gates, n, z.shape[1], x.shape[1], x.data_ptr(), s_b, s_t, s_f, _ptr(order),
                      *(_ptr(t) for t in (W, p_in, p_o, z, acts, cs, tcs, active)))

    def backward(self, z: Tensor, acts: Tensor, cs: Tensor, tcs: Tensor, w_h: Tensor, w_x: Tensor | None,
                 p_in: Tensor, p_o: Tensor, dys: Tensor | None, dh: Tensor, dc: Tensor, dweight: Tensor,
                 dpeep: Tensor, dx: Tensor | None, active: Tensor) -> None:
        """Turn δh_T, δc_T (in ``dh``, ``dc``) into δh_0, δc_0 and add ∇W, the peephole sums and δx."""
        steps, gates, n, batch = acts.shape
        features = 0 if dx is None else dx.shape[1]
        _check(z, acts, cs, tcs, w_h, p_in, p_o, dh, dc, dweight, dpeep, active,
               *(t for t in (w_x, dys, dx) if t is not None))
        self._backward(steps, batch, gates, n, z.shape[1], features,
                       *(_ptr(t) for t in (z, acts, cs, tcs, w_h, w_x, p_in, p_o, dys, dh, dc, dweight, dpeep, dx,
                                           active)))


    def sigmoid(self, a: Tensor) -> Tensor:
        """σ(a) as the kernel computes it, for a contiguous float64 CPU ``a``."""
        _check(a)
        out = torch.empty_like(a)
        self._sigmoid(a.numel(), a.data_ptr(), out.data_ptr())
        return out


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(*tensors: Tensor) -> None:
    for t in tensors:
        if not t.is_contiguous() or t.device.type != "cpu" or t.dtype not in (torch.float64, torch.int64):
            raise ValueError(f"peephole kernel: expected contiguous float64/int64 CPU tensors, got {t.dtype} "
                             f"{tuple(t.shape)} on {t.device}, contiguous={t.is_contiguous()}")


@cache
def load() -> Kernel | None:
    """The built kernel, or None (with one warning saying why) where it cannot be built."""
    if os.environ.get("DISTLSTM_NATIVE", "1") == "0":
        return None
    try:
        path = build()
    except (RuntimeError, OSError) as error:
        try:  # an unwritable cache: build into a private temporary folder for this process
            path = build(Path(tempfile.mkdtemp(prefix="distlstm-kernel-")))
        except (RuntimeError, OSError):
            warnings.warn(f"distlstm: the C++ peephole kernel is not available ({error}); the peephole "
                          "layers run ATen loops instead (same numbers, slower). DISTLSTM_NATIVE=0 silences this.",
                          RuntimeWarning, stacklevel=2)
            return None
    return Kernel(ctypes.CDLL(str(path)))
