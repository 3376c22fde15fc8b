"""The C++ loops of the peephole sequence for small cells: built on first use, loaded with ctypes.

:mod:`~distlstm.models.peephole_fused` runs its forward and backward loops step by step
over the whole batch, one ATen op per line; for the matrix-batch network (n = 4, 10,000
sequences) each op is a pass over a few hundred kilobytes, twenty passes per step.
``peephole_kernel.cpp`` runs the same formulas on the same buffers, but block by block
of 128–512 sequences, all steps of a block with its state in cache, the blocks spread
over ``torch.get_num_threads()`` threads (measured in BENCHMARKS.md, "One full-batch
evaluation").

The source is compiled once per machine with the host C++ compiler (``$CXX``, else
``g++``, ``c++`` or ``clang++``) into ``$DISTLSTM_CACHE`` (default
``~/.cache/distlstm``), under a name that hashes the source, the flags, the compiler
and the CPU, so a changed kernel or machine builds anew; processes that build at the
same time each write their own file and rename it into place. It includes no torch
header: a build takes about a second. A cache folder that others may write to is not
used (a library planted there would run in this process): the build then goes to a
private temporary folder. Where no compiler works, or with ``DISTLSTM_NATIVE=0``,
:func:`load` returns None and the ATen loops run (the same numbers to rounding, about
1.6× slower on the full-batch evaluation).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

SOURCE = "peephole_kernel.cpp"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-pthread", "-shared", "-fPIC")
#: Cells with more weights than this run the ATen loops: their per-step GEMMs are large enough
#: for BLAS to beat the kernel's plain loops, and the per-op overhead the kernel saves is small.
MAX_WEIGHTS = 16384
COMPILE_TIMEOUT_S = 300

_enabled = os.environ.get("DISTLSTM_NATIVE", "1") != "0"


@contextmanager
def native(enabled: bool) -> Iterator[None]:
    """Within the block, use the C++ loops where they apply (True, the default) or always the ATen loops."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def applies(weight: Tensor, *tensors: Tensor) -> bool:
    """Whether the kernel runs a layer with this (G·n, K) folded weight (and these inputs): all float64 on the
    CPU, a cell of at most :data:`MAX_WEIGHTS` weights, the kernel enabled and built."""
    return (_enabled and weight.numel() <= MAX_WEIGHTS
            and all(t.device.type == "cpu" and t.dtype == torch.float64 for t in (weight, *tensors))
            and load() is not None)


def _compiler() -> list[str] | None:
    """The compiler's command (``$CXX`` may carry a launcher, e.g. ``ccache g++``), or None."""
    given = os.environ.get("CXX")
    if given:
        command = shlex.split(given)
        if command and shutil.which(command[0]):
            return command
        warnings.warn(f"distlstm: $CXX={given!r} is not an executable; trying g++, c++, clang++", RuntimeWarning,
                      stacklevel=3)
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return [name]
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


def _private(directory: Path) -> bool:
    """Whether only this user can write ``directory`` (owned by us, not group- or world-writable)."""
    info = directory.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def build(directory: Path | None = None) -> Path:
    """Compile the kernel (unless an identical build is there) and return the shared library's path.

    Raises:
        RuntimeError: no C++ compiler found, the compiler failed or timed out (its output is in the message).
        PermissionError: ``directory`` is writable by other users.
        OSError: ``directory`` cannot be created or written.
    """
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
    source = resources.files("distlstm.models").joinpath(SOURCE).read_bytes()
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=False,
                                 timeout=60).stdout
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{shlex.join(compiler)} --version did not answer in 60 s") from error
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    directory = directory or _cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(directory):
        raise PermissionError(f"{directory} is writable by other users: a library there could be replaced")
    target = directory / f"peephole-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / SOURCE
        src.write_bytes(source)
        out = Path(work) / target.name
        try:
            done = subprocess.run([*compiler, *FLAGS, "-o", str(out), str(src)], capture_output=True, text=True,
                                  check=False, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{shlex.join(compiler)} did not finish {SOURCE} in {COMPILE_TIMEOUT_S} s") from error
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(compiler)} failed to build {SOURCE}:\n{done.stderr.strip()}")
        os.replace(out, target)  # atomic: a concurrent build of the same source writes the same bytes
    return target


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


#: What :func:`load` found: the library's path, or why there is none (for ``distlstm info``).
_found = ""


def _open(directory: Path | None) -> Kernel:
    global _found
    path = build(directory)
    kernel = Kernel(ctypes.CDLL(str(path)))
    _found = str(path)
    return kernel


def status() -> str:
    """A line for ``distlstm info``: which loops small peephole layers run, and where the library is or why not."""
    if not _enabled or os.environ.get("DISTLSTM_NATIVE", "1") == "0":
        return "ATen loops (DISTLSTM_NATIVE=0)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kernel = load()
    return f"C++ loops ({_found})" if kernel is not None else f"ATen loops ({_found})"


@cache
def load() -> Kernel | None:
    """The built kernel, or None (with one warning saying why) where it cannot be built or loaded.

    An unwritable or shared cache folder gets a build in a private temporary folder, removed
    once the library is loaded (the mapping stays valid).
    """
    if os.environ.get("DISTLSTM_NATIVE", "1") == "0":
        return None
    try:
        return _open(None)
    except OSError as first:  # PermissionError included: build privately, for this process
        private = Path(tempfile.mkdtemp(prefix="distlstm-kernel-"))
        try:
            return _open(private)
        except (RuntimeError, OSError) as second:
            reason = f"{first}; then, in a private folder: {second}"
        finally:
            shutil.rmtree(private, ignore_errors=True)
    except RuntimeError as error:
        reason = str(error)
    global _found
    _found = f"the C++ kernel is not available: {reason}"
    warnings.warn(f"distlstm: the C++ peephole kernel is not available ({reason}); the peephole layers run "
                  "ATen loops instead (same numbers, slower). DISTLSTM_NATIVE=0 silences this.",
                  RuntimeWarning, stacklevel=2)
    return None
