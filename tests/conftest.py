"""Test-session settings shared by every test module."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# The C++ kernels (the peephole loops, the covariance downdate: distlstm/native.py builds them) go
# into a cache of this session's own, not the user's ~/.cache/distlstm; subprocesses (torchrun
# workers) inherit it.
_CACHE = None if "DISTLSTM_CACHE" in os.environ else tempfile.mkdtemp(prefix="distlstm-test-cache-")
if _CACHE is not None:
    os.environ["DISTLSTM_CACHE"] = _CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)
