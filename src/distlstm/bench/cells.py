"""Forward + backward of every cell against ``torch.nn.LSTM`` on the same batch.

Setting (the foundation issue's): batch 64, 100 steps, input 32, hidden 128 and 512,
float32, loss = sum of outputs. Besides the library's paths (ATen-fused plain cell,
one-node peephole sequence with its hand-written backward, generic Python loop) it
times two ways to speed up the loop that the library does not use by default —
TorchScript and ``torch.compile`` — so the report can say what each gives.
Two-layer-with-dropout and bidirectional rows are timed against ``nn.LSTM`` built
with the same options (:data:`TWIN_CONFIGS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import distlstm
from distlstm.models import LSTMCell, run_layer
from distlstm.timing import compare


@dataclass(frozen=True)
class CellRow:
    hidden: int
    name: str
    ms: float
    ratio: float  # time / nn.LSTM time at the same hidden size
    parameters: int


def _lstm_loop(xi: Tensor, h: Tensor, c: Tensor, w_hh: Tensor) -> Tensor:
    ys = []
    for xt in xi.unbind(1):
        a = torch.addmm(xt, h, w_hh.t())
        i, f, g, o = a.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys, 1)


def _train_step(model: nn.Module, x: Tensor) -> Callable[[], None]:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)  # CUDA runs asynchronously: wait to time it

    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()
        sync()

    return run


def cell_variants(hidden: int, input_size: int, compile: bool) -> dict[str, nn.Module]:
    """The models to time at one hidden size, keyed by the row name."""
    h = hidden

    def ours(cell: str = "lstm", **kw: object) -> nn.Module:
        return distlstm.LSTM(input_size, h, batch_first=True, cell=cell, **kw)  # type: ignore[arg-type]

    variants: dict[str, nn.Module] = {
        "nn.LSTM (baseline)": nn.LSTM(input_size, h, batch_first=True),
        "lstm, fused ATen kernel (default)": ours(),
        "lstm, Python loop": ours(fused=False),
        "lstm, TorchScript loop": _Scripted(input_size, h),
        "sharpened α=3.75, fused": ours("sharpened"),
        "sharpened α=3.75, Python loop": ours("sharpened", fused=False),
        "peephole": ours("peephole"),
        "peephole, Python loop": ours("peephole", fused=False),
        "peephole, no forget gate": ours("peephole", forget_gate=False),
        "peephole, no forget gate, Python loop": ours("peephole", forget_gate=False, fused=False),
        f"nn.LSTM proj_size={h // 4}": nn.LSTM(input_size, h, batch_first=True, proj_size=h // 4),
        f"lstmp proj_size={h // 4}, fused": ours("lstmp", proj_size=h // 4),
        f"flstm rank={h // 4}": ours("flstm", rank=h // 4),
        "glstm groups=2": ours("glstm", groups=2),
        "glstm groups=4": ours("glstm", groups=4),
        "nn.RNN tanh": nn.RNN(input_size, h, batch_first=True),
        "rnn tanh": ours("rnn"),
    }
    for label, options in TWIN_CONFIGS.items():  # nn.LSTM options, each row against nn.LSTM with the same
        variants[f"nn.LSTM, {label}"] = nn.LSTM(input_size, h, batch_first=True, **options)
        variants[f"lstm, {label}, fused"] = ours("lstm", **options)
    if compile:
        variants["lstm, torch.compile of the loop"] = _Compiled(input_size, h)
    return variants


#: Configurations timed against ``nn.LSTM`` built with the same options (models time in training mode).
TWIN_CONFIGS: dict[str, dict[str, Any]] = {
    "2 layers, dropout 0.1 (training)": {"num_layers": 2, "dropout": 0.1},
    "bidirectional": {"bidirectional": True},
}


def baseline_of(name: str) -> str:
    """The row a variant's ratio is taken against: its ``nn.LSTM`` twin, else the 1-layer ``nn.LSTM``."""
    for label in TWIN_CONFIGS:
        if name.startswith("lstm, ") and name == f"lstm, {label}, fused":
            return f"nn.LSTM, {label}"
    return "nn.LSTM (baseline)"


class _Scripted(nn.Module):
    """Our LSTM cell with the time loop compiled by TorchScript (benchmark only)."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.cell = LSTMCell(input_size, hidden)
        with warnings.catch_warnings():  # TorchScript is deprecated; we time it only to report what it gives
            warnings.simplefilter("ignore", DeprecationWarning)
            self.loop = torch.jit.script(_lstm_loop)

    def forward(self, x: Tensor) -> tuple[Tensor]:
        b, n = x.shape[0], self.cell.hidden_size
        xi = self.cell.input_projection(x)
        return (self.loop(xi, x.new_zeros(b, n), x.new_zeros(b, n), self.cell.weight_hh),)


class _Compiled(nn.Module):
    """Our generic runner over the plain cell, compiled by ``torch.compile`` (benchmark only)."""

    def __init__(self, input_size: int, hidden: int) -> None:
        super().__init__()
        self.cell = LSTMCell(input_size, hidden)
        self.run = torch.compile(self._run)

    def _run(self, x: Tensor) -> Tensor:
        return run_layer(self.cell, x, self.cell.init_state(x.shape[0]))[0]

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.run(x),)


def bench_cells(hidden_sizes: tuple[int, ...] = (128, 512), batch: int = 64, steps: int = 100,
                input_size: int = 32, repeats: int = 10, compile: bool = False,
                progress: Callable[[str], None] | None = None, device: str = "cpu") -> list[CellRow]:
    """Time forward+backward of every variant against ``nn.LSTM``, per hidden size.

    On ``device="cuda"`` the baseline ``nn.LSTM`` runs cuDNN's fused kernel.
    """
    rows: list[CellRow] = []
    for h in hidden_sizes:
        torch.manual_seed(0)
        x = torch.randn(batch, steps, input_size, device=device)
        variants = {name: m.to(device) for name, m in cell_variants(h, input_size, compile).items()}
        if progress:
            progress(f"cells, hidden {h}: {len(variants)} variants")
        times = compare({name: _train_step(m, x) for name, m in variants.items()}, repeats=repeats)
        for name, m in variants.items():
            n_params = sum(p.numel() for p in m.parameters())
            rows.append(CellRow(h, name, times[name] * 1e3, times[name] / times[baseline_of(name)], n_params))
    return rows
