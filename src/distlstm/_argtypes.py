"""Argument types shared by the command-line parsers."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def cell_option(text: str) -> tuple[str, float | int | tuple[int, ...]]:
    """``KEY=VALUE`` with a numeric value (``rank=32``, ``alpha=3.75``); ``groups=4,8`` gives one int per layer."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. rank=32), got {text!r}")
    if "," in raw:
        try:
            return key, tuple(int(part) for part in raw.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"per-layer values of {key} must be integers separated by commas "
                                             f"(e.g. {key}=4,8), got {raw!r}") from None
    try:
        return key, int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):  # nan and inf parse as floats but are no cell setting
            raise argparse.ArgumentTypeError(f"the value of {key} must be a finite number, got {raw!r}") from None
        return key, value
