"""Building and loading the C++ loops (``distlstm.native``), for both kernels that use it.

Each kernel's numbers are tested beside its ATen path (``tests/models/test_peephole_kernel.py``,
``tests/ops/test_downdate_kernel.py``); here: the build is cached and keyed, a shared cache
folder is refused, and every way a kernel can be missing (no compiler, a failing one, a library
that will not load, ``DISTLSTM_NATIVE=0``) falls back to the ATen path with the reason said.
"""

from __future__ import annotations

import shutil
import stat
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

from distlstm import native
from distlstm.models import peephole_kernel
from distlstm.ops import downdate_kernel

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler on this machine")
KERNELS = [pytest.param(peephole_kernel, id="peephole"), pytest.param(downdate_kernel, id="downdate")]
D = torch.float64


def applies(kernel: ModuleType) -> bool:
    """The kernel's own test of whether it runs, on inputs it takes when built."""
    if kernel is peephole_kernel:
        return peephole_kernel.applies(torch.zeros(12, 7, dtype=D))
    n = downdate_kernel.MIN_SIZE
    return downdate_kernel.applies(torch.zeros(n, n, dtype=D), torch.zeros(3, n, dtype=D))


@pytest.fixture
def fresh_load():
    """native.load() forgets what it loaded before and after the test (it caches per source)."""
    native.load.cache_clear()
    yield
    native.load.cache_clear()


def fake_compiler(folder: Path, script: str) -> str:
    path = folder / "fake-cxx"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@needs_compiler
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_build_where_a_compiler_is(kernel):
    """With a compiler present each kernel must load: a silent fallback would hide a broken build."""
    assert kernel.load() is not None
    assert applies(kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_failing_compiler_is_reported(kernel, tmp_path, monkeypatch, fresh_load):
    """build() names the compiler and its message; load() warns once and returns None (the ATen path runs)."""
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, 'echo "fake-cxx: error: out of luck" >&2; exit 1\n'))
    with pytest.raises(RuntimeError, match="out of luck"):
        native.build(kernel.PACKAGE, kernel.SOURCE, tmp_path / "cache")
    monkeypatch.setenv("DISTLSTM_CACHE", str(tmp_path / "cache"))
    name = "peephole kernel" if kernel is peephole_kernel else "downdate kernel"
    with pytest.warns(RuntimeWarning, match=f"C\\+\\+ {name} is not available"):
        assert kernel.load() is None
    assert not applies(kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_disabled_by_environment_without_a_warning(kernel, monkeypatch, fresh_load):
    """DISTLSTM_NATIVE=0: no build, no warning, the ATen path."""
    monkeypatch.setenv("DISTLSTM_NATIVE", "0")
    monkeypatch.setenv("CXX", "/nonexistent/compiler")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel.load() is None
        assert not applies(kernel)


@needs_compiler
def test_build_is_cached_and_keyed_by_source_and_compiler(tmp_path, monkeypatch):
    """A second build finds the first (not rebuilt); another source or compiler version builds its own library."""
    first = native.build(peephole_kernel.PACKAGE, peephole_kernel.SOURCE, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert native.build(peephole_kernel.PACKAGE, peephole_kernel.SOURCE, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    other = native.build(downdate_kernel.PACKAGE, downdate_kernel.SOURCE, tmp_path)
    assert first.name.startswith("peephole-") and other.name.startswith("downdate-")
    command = native.compiler()
    assert command is not None
    real = shutil.which(command[0])
    assert real is not None
    rest = " ".join(f'"{part}"' for part in command[1:])
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, f'[ "$1" = --version ] && {{ echo "other 9.9"; exit 0; }}\n'
                                                      f'exec "{real}" {rest} "$@"\n'))
    second = native.build(peephole_kernel.PACKAGE, peephole_kernel.SOURCE, tmp_path)
    assert second != first
    assert sorted(p.name for p in tmp_path.glob("*.so")) == sorted([first.name, other.name, second.name])


@needs_compiler
def test_a_shared_cache_folder_is_not_used(tmp_path, monkeypatch, fresh_load):
    """A group/world-writable cache: build() refuses it, load() builds privately, then removes that folder."""
    shared = tmp_path / "shared"
    (shared / "kernels").mkdir(parents=True)
    (shared / "kernels").chmod(0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        native.build(downdate_kernel.PACKAGE, downdate_kernel.SOURCE, shared / "kernels")
    private = tmp_path / "private"
    monkeypatch.setenv("DISTLSTM_CACHE", str(shared))
    mkdtemp = native.tempfile.mkdtemp

    def private_folder(suffix=None, prefix=None, dir=None):  # load()'s call, not TemporaryDirectory's
        return mkdtemp(suffix, prefix, dir) if dir else str(private.mkdir() or private)

    monkeypatch.setattr(native.tempfile, "mkdtemp", private_folder)
    assert downdate_kernel.load() is not None
    assert not private.exists() and list((shared / "kernels").iterdir()) == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_library_that_will_not_load_falls_back(kernel, tmp_path, monkeypatch, fresh_load):
    """dlopen failing (a noexec cache, SELinux) is a warning and the ATen path, not an error in every call."""
    from distlstm.models.peephole_fused import peephole_sequence
    from distlstm.ops.kalman import downdate

    real_cdll = native.ctypes.CDLL

    def refuse(path: str | None, *args: object, **kwargs: object) -> object:
        """dlopen fails for every library file (the kernels'); the process's own symbols (libc's madvise, which
        memory.py looks up with CDLL(None)) still load, whichever test ran first."""
        if path is None:
            return real_cdll(path, *args, **kwargs)
        raise OSError(f"{path}: failed to map segment from shared object")

    monkeypatch.setenv("DISTLSTM_CACHE", str(tmp_path))
    monkeypatch.setattr(native.ctypes, "CDLL", refuse)
    with pytest.warns(RuntimeWarning, match="failed to map segment"):
        assert kernel.load() is None
    assert not applies(kernel)
    if kernel is peephole_kernel:  # a layer the kernel would take runs the ATen loops
        x, h0, c0 = torch.randn(3, 2, 5, dtype=D), torch.zeros(2, 5, dtype=D), torch.zeros(2, 5, dtype=D)
        y = peephole_sequence(x, h0, c0, torch.randn(6, 5, dtype=D), torch.randn(2, 2, dtype=D), True, None)[1]
        assert bool(torch.isfinite(y).all())
    else:  # a downdate the kernel would take runs the ATen passes
        n = downdate_kernel.MIN_SIZE
        P, w = torch.eye(n, dtype=D), torch.ones(3, n, dtype=D)
        torch.testing.assert_close(downdate(P, w), P - 3.0, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_status_says_which_loops_and_why(kernel, tmp_path, monkeypatch, fresh_load):
    """distlstm info's lines: the library's path when built, the switch when off, the reason when unavailable."""
    native_name, aten_name = (("C++ loops", "ATen loops") if kernel is peephole_kernel
                              else ("C++ one-pass loop", "ATen passes"))
    if native.compiler() is not None:
        assert kernel.status() == f"{native_name} ({native.found[kernel.SOURCE]})"
        assert native.found[kernel.SOURCE].endswith(".so")
    with native.use(False):
        assert kernel.status() == f"{aten_name} (DISTLSTM_NATIVE=0)"
    native.load.cache_clear()
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, "exit 1\n"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ either
    assert kernel.status().startswith(f"{aten_name} (the C++ kernel is not available: ")
