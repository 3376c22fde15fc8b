"""Input validation shared by every public entry point.

Errors say what was expected and what was given ("expected …, got …") so a user
can fix the call without reading our code. Checks that need a value from a tensor
(finiteness, ranges) are skipped inside ``torch.func`` transforms, where tensors
have no concrete values; the functional API validates before it transforms.
"""

from __future__ import annotations

import torch
from torch import Tensor


def is_transformed(t: Tensor) -> bool:
    """True inside ``torch.compile`` or when ``t`` is wrapped by a ``torch.func`` transform.

    Either way the tensor has no concrete values to check, and ATen's fused LSTM
    (which cannot be vmapped) must not be used.
    """
    if torch.compiler.is_compiling():
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_finite(t: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or infinity."""
    if is_transformed(t) or not t.is_floating_point():
        return
    # A finite sum means every term is finite (NaN and ±inf propagate); one reduction
    # is much cheaper than isfinite() on a large θ batch. Overflow falls through.
    if bool(torch.isfinite(t.sum())):
        return
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the data first")


def check_ndim(t: Tensor, allowed: tuple[int, ...], name: str, layout: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in allowed:
        dims = " or ".join(str(d) for d in allowed)
        raise ValueError(f"{name} must have {dims} dimensions {layout}, got shape {tuple(t.shape)}")


def check_size(actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{what}: expected {expected}, got {actual}")


def check_lengths(lengths: Tensor, batch: int, steps: int) -> Tensor:
    """Validate per-sequence lengths: shape ``(batch,)``, integers in ``[1, steps]``."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {tuple(lengths.shape)}")
    if not is_transformed(lengths) and batch > 0:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > steps:
            raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got min {lo}, max {hi}")
    return lengths
