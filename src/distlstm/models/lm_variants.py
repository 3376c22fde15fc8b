"""Kuchaiev & Ginsburg's word-LM variants: the recurrent layer each name stands for, and the paper's Table 1.

Shared by the F-LSTM/G-LSTM reproduction and the word-LM benchmark (which must not
import the reproduction). F-LSTM's rank is r = p/2, the paper's F512 at p = 1024.
"""

from __future__ import annotations

from typing import Any

VARIANTS = ("LSTMP", "F-LSTM", "G-2", "G-4", "G-8", "G4-G8")

# The paper's Table 1: perplexity, steps, RNN parameters, words/s (4 GPUs, one week).
TABLE1 = {"LSTMP": (35.1, 990_000, 151_060_480, 33_800), "F-LSTM": (36.3, 1_670_000, 52_494_336, 56_500),
          "G-2": (36.0, 1_370_000, 83_951_616, 41_700), "G-4": (40.6, 1_128_000, 50_397_184, 56_000),
          "G-8": (39.4, 850_400, 33_619_968, 58_500)}


def variant_cell(model: str, proj: int) -> tuple[str, dict[str, Any]]:
    """The cell name and its options for a variant at projection size p = ``proj``."""
    cells: dict[str, tuple[str, dict[str, Any]]] = {
        "LSTMP": ("lstmp", {}), "F-LSTM": ("flstm", {"rank": proj // 2}),
        "G-2": ("glstm", {"groups": 2}), "G-4": ("glstm", {"groups": 4}), "G-8": ("glstm", {"groups": 8}),
        "G4-G8": ("glstm", {"groups": (4, 8)})}
    if model not in cells:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(cells)}")
    return cells[model]
