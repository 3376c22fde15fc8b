"""The library's C++ loops: each source compiled on first use with the host compiler, loaded with ctypes.

Two kernels use this: the peephole sequence's loops (:mod:`distlstm.models.peephole_kernel`)
and the Kalman filters' covariance downdate (:mod:`distlstm.ops.downdate_kernel`). Each
keeps its own Python wrapper (argument types, shape checks, when it applies); building,
caching, loading and the switch that turns them off live here, once.

A source is compiled once per machine with the host C++ compiler (``$CXX``, else
``g++``, ``c++`` or ``clang++``) into ``$DISTLSTM_CACHE`` (default
``~/.cache/distlstm``), under a name that hashes the source, the flags, the compiler and
the CPU, so a changed kernel or machine builds anew; processes that build at the same
time each write their own file and rename it into place. No source includes a torch
header: a build takes about a second. A cache folder that others may write to is not
used (a library planted there would run in this process): the build then goes to a
private temporary folder. Where no compiler works, or with ``DISTLSTM_NATIVE=0``,
:func:`load` returns None (with one warning saying why, unless switched off) and the
callers run their ATen paths, which give the same numbers.
"""

from __future__ import annotations

import ctypes
import hashlib
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

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-pthread", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 300

_enabled = os.environ.get("DISTLSTM_NATIVE", "1") != "0"


@contextmanager
def use(enabled: bool) -> Iterator[None]:
    """Within the block, use the C++ loops where they apply (True, the default) or always the ATen paths."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def enabled() -> bool:
    """Whether the C++ loops may run: not switched off by :func:`use` or ``DISTLSTM_NATIVE=0``."""
    return _enabled and os.environ.get("DISTLSTM_NATIVE", "1") != "0"


def compiler() -> list[str] | None:
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


def build(package: str, source: str, directory: Path | None = None) -> Path:
    """Compile ``source`` (a file of ``package``) unless an identical build is there; return the library's path.

    Raises:
        RuntimeError: no C++ compiler found, the compiler failed or timed out (its output is in the message).
        PermissionError: ``directory`` is writable by other users.
        OSError: ``directory`` cannot be created or written.
    """
    command = compiler()
    if command is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
    text = resources.files(package).joinpath(source).read_bytes()
    try:
        version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False,
                                 timeout=60).stdout
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{shlex.join(command)} --version did not answer in 60 s") from error
    key = hashlib.sha256(b"\0".join([text, " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    directory = directory or _cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(directory):
        raise PermissionError(f"{directory} is writable by other users: a library there could be replaced")
    stem = Path(source).stem.removesuffix("_kernel")
    target = directory / f"{stem}-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / source
        src.write_bytes(text)
        out = Path(work) / target.name
        try:
            done = subprocess.run([*command, *FLAGS, "-o", str(out), str(src)], capture_output=True, text=True,
                                  check=False, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{shlex.join(command)} did not finish {source} in {COMPILE_TIMEOUT_S} s") from error
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed to build {source}:\n{done.stderr.strip()}")
        os.replace(out, target)  # atomic: a concurrent build of the same source writes the same bytes
    return target


#: What :func:`load` found for each source: the library's path, or why there is none (for ``distlstm info``).
found: dict[str, str] = {}


@cache
def load(package: str, source: str, what: str) -> ctypes.CDLL | None:
    """The built library of ``source``, or None (with one warning naming ``what`` falls back) if it cannot be had.

    An unwritable or shared cache folder gets a build in a private temporary folder, removed
    once the library is loaded (the mapping stays valid). ``DISTLSTM_NATIVE=0``: None, no build,
    no warning.
    """
    if os.environ.get("DISTLSTM_NATIVE", "1") == "0":
        return None
    try:
        return _open(package, source, None)
    except OSError as first:  # PermissionError included: build privately, for this process
        private = Path(tempfile.mkdtemp(prefix="distlstm-kernel-"))
        try:
            return _open(package, source, private)
        except (RuntimeError, OSError) as second:
            reason = f"{first}; then, in a private folder: {second}"
        finally:
            shutil.rmtree(private, ignore_errors=True)
    except RuntimeError as error:
        reason = str(error)
    found[source] = f"the C++ kernel is not available: {reason}"
    warnings.warn(f"distlstm: the C++ {what} is not available ({reason}); the ATen path runs instead (same "
                  "numbers, slower). DISTLSTM_NATIVE=0 silences this.", RuntimeWarning, stacklevel=3)
    return None


def _open(package: str, source: str, directory: Path | None) -> ctypes.CDLL:
    path = build(package, source, directory)
    library = ctypes.CDLL(str(path))
    found[source] = str(path)
    return library


def status(package: str, source: str, what: str, native_name: str, aten_name: str) -> str:
    """A line for ``distlstm info``: which loops run, and where the library is or why there is none."""
    if not enabled():
        return f"{aten_name} (DISTLSTM_NATIVE=0)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        library = load(package, source, what)
    return f"{native_name} ({found[source]})" if library is not None else f"{aten_name} ({found[source]})"
