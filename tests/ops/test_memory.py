"""Fresh large tensors on huge pages (``ops/memory.py``): the same tensor as ``torch.empty_like``, advised."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from distlstm.ops import memory
from distlstm.ops.kalman import downdate

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The bracketed mode of transparent huge pages (always, madvise, never), or None off Linux."""
    if not sys.platform.startswith("linux") or not THP.exists():
        return None
    found = re.search(r"\[(\w+)\]", THP.read_text())
    return found.group(1) if found else None


def mapping_of(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping that holds ``address``."""
    fields: dict[str, str] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            inside = int(head.group(1), 16) <= address < int(head.group(2), 16)
        elif inside and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


@pytest.mark.parametrize("shape", [(3, 5), (2100, 2100)])
def test_a_tensor_like_empty_like(shape):
    t = torch.randn(shape, dtype=torch.float64).mT  # not contiguous: the copy is
    out = memory.empty_like(t)
    assert out.shape == t.shape and out.dtype == t.dtype and out.is_contiguous()
    assert out.data_ptr() != t.data_ptr()


@pytest.mark.skipif(thp_mode() not in ("madvise", "always"), reason="transparent huge pages are off or not Linux")
def test_a_large_tensor_is_advised_onto_huge_pages():
    """The advised part of the mapping carries the hugepage flag (and is eligible); a plain tensor's does not.

    (The advice splits the mapping: the part before the first whole huge page is not advised.)
    """
    def first_huge_page(t: torch.Tensor) -> int:
        return -(-t.data_ptr() // memory.HUGE_PAGE) * memory.HUGE_PAGE

    big = memory.empty_like(torch.empty(2048, 2048, dtype=torch.float64))  # 32 MiB: its own mapping
    advised = mapping_of(first_huge_page(big))
    assert advised.get("THPeligible") == "1" and "hg" in advised["VmFlags"].split()  # hg: MADV_HUGEPAGE given
    plain = torch.empty(2048, 2048, dtype=torch.float64)
    assert "hg" not in mapping_of(first_huge_page(plain))["VmFlags"].split()


def test_small_tensors_make_no_system_call(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_madvise", lambda: lambda *a: calls.append(a) or 0)
    memory.empty_like(torch.empty(720, 720, dtype=torch.float64))  # 3.96 MiB: below MIN_BYTES
    assert calls == []
    big = memory.empty_like(torch.empty(1680, 1680, dtype=torch.float64))  # 21.5 MiB: hidden 16's Σ
    (start, length, advice), = calls
    assert advice == memory.MADV_HUGEPAGE and start % memory.HUGE_PAGE == 0 and length % memory.HUGE_PAGE == 0
    assert big.data_ptr() <= start and start + length <= big.data_ptr() + big.nbytes and length > 0


def test_the_downdate_on_huge_pages_has_the_same_bits():
    """Σ − Σ_k w_k w_kᵀ into an advised tensor: ATen's own addcmul, bit for bit, still exactly symmetric (a check
    that the output tensor changes no value, whether or not the advice took)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2100, 2100, generator=gen, dtype=torch.float64)
    P, W = a + a.mT, torch.randn(3, 2100, generator=gen, dtype=torch.float64)
    plain = torch.addcmul(P, W[0, :, None], W[0, None, :], value=-1.0)
    for w in W[1:]:
        plain.addcmul_(w[:, None], w[None, :], value=-1.0)
    got = downdate(P, W)
    assert torch.equal(got, plain) and torch.equal(got, got.mT)
