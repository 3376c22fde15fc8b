"""Forecasting windows from a table: several input series and one target, scaled without looking ahead.

Observation e (the unit the online algorithms and the ``csv`` training task consume)::

    x_e = rows [e − W, e) of the features, scaled        (W × p: the sequence)
    d_e = target at row e + H − 1, scaled                (H = horizon; H = 1: the next row)

The features are the input columns, followed by the target's own past values when
``past_target`` is on (the default: a forecaster should see the series it forecasts).
A missing target cell makes ``d_e`` NaN — "no label": an online run predicts, records
nothing and skips the update; as a past-target feature the last observed value is
carried forward (0, the scaled mean, before the first). A missing input cell is an
error naming its file, line and column.

Scaling, per column, value ↦ (value − shift) / scale:

* ``causal`` — shift and scale are the mean and standard deviation (unbiased) of the
  column's values in rows < e, i.e. what was known when forecast e was made. The
  whole window and the label of observation e use that one map, so a forecast in the
  data's units is ``shift_e + scale_e · d̂``. Nothing at or after row e is read; the
  first ``warmup`` rows only feed the statistics (forecasting starts at row
  max(W, warmup)). The default for ``distlstm online``.
* ``standardize`` / ``minmax`` / ``none`` — one map per column fitted on rows
  [0, ``fit_rows``): the whole series by default (an offline experiment, as the
  Ergen & Kozat reproduction), the training part for the ``csv`` training task.

A scale that is zero (a constant column) or not finite (values near 1e300, whose
squares overflow) is an error naming the column and the flag that fixes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from distlstm._flags import on_cli, option, setting
from distlstm.data.observation import Observation
from distlstm.data.series import Scaler
from distlstm.data.table import Table

SCALINGS = ("causal", "standardize", "minmax", "none")


@dataclass(frozen=True)
class Forecasts:
    """Scaled windows ``x`` (M, W, p) and labels ``d`` (M,), with what maps them back to the data's units."""

    x: Tensor
    d: Tensor  # NaN: no label
    ends: Tensor  # (M,) e: window rows [e − W, e)
    label_lines: list[int]  # file line of each label
    shift: Tensor  # (M,) the target's map per observation: data = shift + scale · scaled
    scale: Tensor
    last_target: Tensor  # (M,) last observed target before row e, scaled (the naive forecast); NaN if none
    features: list[str]
    target: str
    # Fitted scalings: (shift, scale) of each input column then the target, so that another file can be
    # scaled with the same maps (``forecast_windows(..., maps=)``); empty for causal scaling.
    maps: tuple[tuple[float, float], ...] = ()

    def __len__(self) -> int:
        return self.d.shape[0]

    @cached_property
    def observations(self) -> list[Observation]:
        return [Observation(self.x[i], float(self.d[i])) for i in range(len(self))]

    def to_data_units(self, scaled: Tensor) -> Tensor:
        """Forecasts (M,) in scaled units → the target's own units."""
        return self.shift + self.scale * scaled


def check_rows_for_run(table: Table, *, window: int, horizon: int, scaling: str, warmup: int) -> None:
    """A file forecast with a trained run's settings must hold one window at least.

    The window, horizon and warm-up are the run's, not flags of the forecasting
    command, so the message asks for a longer file instead of naming them as flags.
    """
    first = max(window, warmup) if scaling == "causal" else window
    need = first + horizon
    if len(table) < need:
        parts = f"a window of {window} rows" + (f" after the causal scaler's warm-up of {warmup} rows"
                                                if first > window else "") + f" and a horizon of {horizon}"
        raise ValueError(f"{table.path} has {len(table)} data rows; the run's model needs at least {need} ({parts}) "
                         "to forecast one value: give a file with more rows")


def forecast_windows(table: Table, target: str | int, inputs: Sequence[str | int] = (), *, window: int = 2,
                     horizon: int = 1, scaling: str = "causal", warmup: int = 20, past_target: bool = True,
                     fit_rows: int | None = None, maps: Sequence[tuple[float, float]] | None = None) -> Forecasts:
    """Observations of ``table`` predicting ``target`` ``horizon`` rows after a ``window`` of features.

    ``fit_rows`` limits the fitted (non-causal) scalers to the first rows (the training part);
    ``maps`` (fitted scalings only) reuses another table's maps (:attr:`Forecasts.maps`) instead of fitting.
    """
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be at least 1, got {window} and {horizon} "
                         f"(fix {option('window', '--window')} / {option('horizon', '--horizon')})")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; expected one of {SCALINGS}")
    if scaling == "causal" and warmup < 2:
        raise ValueError(f"the causal scaler needs a warm-up of at least 2 rows (a spread), got {warmup} "
                         f"(fix {option('warmup', '--warmup')})")
    t = table.index(target, ("target", "--target"))
    cols = [table.index(c, ("inputs", "--inputs")) for c in inputs]
    _check_columns(table, t, cols, past_target)
    if maps is not None and scaling == "causal":
        raise ValueError("maps replace a fitted scaler (standardize, minmax or none); causal scaling fits none")
    if maps is not None and len(maps) != len(cols) + 1:
        raise ValueError(f"maps holds {len(maps)} (shift, scale) pairs; expected one per input column and one for "
                         f"the target ({len(cols) + 1})")
    n = len(table)
    y = table.values[:, t]
    ffilled = _forward_fill(y)
    feats = [table.values[:, c] for c in cols] + ([ffilled] if past_target else [])
    first = max(window, warmup) if scaling == "causal" else window
    ends = torch.arange(first, max(first, n - horizon + 1))
    if len(ends) == 0:
        warm = first > window
        need = setting("window", "--window", window) + (
            f" (and the causal scaler's {setting('warmup', '--warmup', warmup)})" if warm else "")
        raise ValueError(f"{table.path} has {n} rows: {need} plus a horizon of {horizon} leave no window to "
                         f"forecast; shorten {option('window', '--window')}"
                         + (f" or {option('warmup', '--warmup')}" if warm else "") + ", or add rows")
    names = [table.column_name(c) for c in cols] + ([f"{table.column_name(t)} (past)"] if past_target else [])
    if maps is not None and len(maps) != len(cols) + 1:
        raise ValueError(f"{len(maps)} column maps given for {len(cols)} input column(s) and the target; the model "
                         f"was trained on {len(maps) - 1} input column(s)")
    shifts, scales = [], []
    for i, (values, name) in enumerate(zip([*feats[: len(cols)], y], [*names[: len(cols)], table.column_name(t)],
                                           strict=True)):
        if maps is not None:
            shift, scale = (torch.full((n + 1,), float(v), dtype=values.dtype) for v in maps[i])
        else:
            shift, scale = _fit(values, scaling, fit_rows)
        _check_scale(table, name, values, shift[ends], scale[ends], ends, scaling, fit_rows, is_target=values is y)
        shifts.append(shift)
        scales.append(scale)
    fitted = () if scaling == "causal" else tuple((float(a[0]), float(b[0])) for a, b in zip(shifts, scales,
                                                                                              strict=True))
    if past_target:  # the past target uses the target's map
        shifts.insert(len(cols), shifts[-1])
        scales.insert(len(cols), scales[-1])
    shift_t, scale_t = shifts[-1][ends], scales[-1][ends]
    shift_f = torch.stack(shifts[:-1], -1)[ends]  # (M, p)
    scale_f = torch.stack(scales[:-1], -1)[ends]
    raw = torch.stack(feats, -1)  # (N, p)
    x = raw.unfold(0, window, 1)[ends - window].transpose(1, 2)  # (M, W, p): rows [e − W, e)
    x = torch.nan_to_num((x - shift_f[:, None]) / scale_f[:, None], nan=0.0)  # NaN only: a past target not seen yet
    d = (y[ends + horizon - 1] - shift_t) / scale_t
    last = (ffilled[ends - 1] - shift_t) / scale_t
    return Forecasts(x, d, ends, [table.lines[int(e) + horizon - 1] for e in ends], shift_t, scale_t, last, names,
                     table.column_name(t), fitted)


def _check_columns(table: Table, target: int, cols: list[int], past_target: bool) -> None:
    name = table.column_name(target)
    if len(set(cols)) != len(cols):
        raise ValueError(f"{option('inputs', '--inputs')} names a column twice: "
                         f"{[table.column_name(c) for c in cols]}")
    if past_target and target in cols:
        raise ValueError(f"the target {name!r} is also in {option('inputs', '--inputs')}; its past values are a "
                         f"feature already (remove it from {option('inputs', '--inputs')}, or turn past values off "
                         f"with {'--no-past-target' if on_cli() else 'past_target=False'})")
    if not cols and not past_target:
        raise ValueError(f"nothing to forecast from: give {option('inputs', '--inputs')} or keep the target's past "
                         "values as a feature")
    if len(cols) > len(table):
        raise ValueError(f"{table.path} has {len(table)} rows but {len(cols)} input columns: each row must be one "
                         "time step and each input series one column (is the table transposed?)")
    for c in cols:
        missing = torch.isnan(table.values[:, c]).nonzero()
        if len(missing):
            raise ValueError(f"{table.where(int(missing[0]), c)}: empty cell; an input series needs a value at "
                             "every row (only the target may be empty: no label). Fill or drop the row, or leave "
                             f"the column out of {option('inputs', '--inputs')}")
    if int(torch.isfinite(table.values[:, target]).sum()) < 2:
        raise ValueError(f"the target {name!r} in {table.path} has fewer than 2 values")


def _forward_fill(v: Tensor) -> Tensor:
    """Each NaN replaced by the last value before it (NaN before the first value): causal."""
    seen = torch.isfinite(v)
    idx = torch.where(seen, torch.arange(len(v)), -1).cummax(0).values
    return torch.where(idx >= 0, v[idx.clamp(min=0)], math.nan)


def _fit(v: Tensor, how: str, fit_rows: int | None) -> tuple[Tensor, Tensor]:
    """(shift, scale), each (N + 1,): entry e is the map of an observation whose window ends before row e."""
    n = len(v)
    if how != "causal":
        seen = v[:fit_rows][torch.isfinite(v[:fit_rows])]
        if how != "none" and len(seen) and bool((seen == seen[0]).all()):
            zero = torch.zeros(n + 1, dtype=v.dtype)
            return zero, zero  # reported as a zero scale by _check_scale
        s = Scaler.fit(seen, how)
        return torch.full((n + 1,), s.shift, dtype=v.dtype), torch.full((n + 1,), s.scale, dtype=v.dtype)
    seen = torch.isfinite(v)
    ref = v[seen][0]
    z = torch.where(seen, v - ref, 0.0)  # centred on the first value: less cancellation in Σz² − (Σz)²/k
    k = torch.cat([v.new_zeros(1), seen.to(v.dtype).cumsum(0)])
    s1 = torch.cat([v.new_zeros(1), z.cumsum(0)])
    s2 = torch.cat([v.new_zeros(1), (z * z).cumsum(0)])
    mean = ref + s1 / k
    var = ((s2 - s1 * s1 / k) / (k - 1)).clamp(min=0.0)
    return mean, var.sqrt()


def _check_scale(table: Table, name: str, values: Tensor, shift: Tensor, scale: Tensor, ends: Tensor,
                 scaling: str, fit_rows: int | None, is_target: bool) -> None:
    bad = ~(torch.isfinite(shift) & torch.isfinite(scale) & (scale > 0))
    if not bool(bad.any()):
        return
    fitted = values if scaling == "causal" else values[:fit_rows]
    seen = fitted[torch.isfinite(fitted)]
    where = f"column {name!r} of {table.path}"
    rows = "" if fit_rows is None or scaling == "causal" else f" over the {fit_rows} rows the scaler is fitted on"
    if len(seen) and bool((seen == seen[0]).all()):
        fix = "there is nothing to learn" if is_target else f"leave it out of {option('inputs', '--inputs')}"
        raise ValueError(f"{where} is constant{rows} (every value is {float(seen[0]):g}): its scale is 0 and it "
                         f"carries no information; {fix}")
    big = float(seen.abs().max()) if len(seen) else 0.0
    if not math.isfinite(big * big * max(len(seen), 1)) or bool(torch.isinf(shift).any() | torch.isinf(scale).any()):
        raise ValueError(f"{where}: the {scaling} scaler's scale is not finite (values reach {big:.3g}, whose "
                         "squares or sums overflow float64); divide the column by a power of ten before training")
    e = int(ends[bad.nonzero()[0]])
    raise ValueError(f"{where}: fewer than 2 distinct values before line {table.lines[e]}, so the causal scaler "
                     f"has no spread to scale that row with; raise {option('warmup', '--warmup')} (the first rows "
                     "only feed the scaler's statistics)")
