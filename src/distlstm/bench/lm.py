"""Training speed of the word language models (Kuchaiev & Ginsburg's Table 1, words/s column).

One training step of the whole model — embedding, two recurrent layers, sampled
softmax, backward — for every layer kind at the same p and n (n = 8p, F-LSTM rank
r = p/2), timed side by side; words/s relative to the LSTMP baseline. The paper's
ratios on 4 GPUs (F512 1.67×, G-2 1.23×, G-4 1.66×, G-8 1.73×) are the floor to beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distlstm.bench.timing import compare
from distlstm.models.lm_variants import TABLE1 as PAPER
from distlstm.models.lm_variants import VARIANTS, variant_cell
from distlstm.models.networks import WordLM

MODELS = VARIANTS


@dataclass(frozen=True)
class LMRow:
    proj: int  # p
    hidden: int  # n
    model: str
    rnn_parameters: int
    ms: float  # one training step
    words_per_second: float
    ratio: float  # words/s ÷ LSTMP words/s at the same p, n

    @property
    def paper_ratio(self) -> float | None:
        paper = PAPER.get(self.model)
        return None if paper is None else paper[3] / PAPER["LSTMP"][3]


def bench_lm(scales: tuple[tuple[int, int], ...] = ((64, 512), (128, 1024)), *, batch: int = 32, window: int = 20,
             vocab: int = 10_000, samples: int = 1024, repeats: int = 5, models: tuple[str, ...] = MODELS,
             progress: Callable[[str], None] | None = None) -> list[LMRow]:
    """Words/s of one training step (forward + backward, sampled softmax) of each model at each (p, n)."""
    rows = []
    for proj, hidden in scales:
        if progress:
            progress(f"word LMs: p = {proj}, n = {hidden}")
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (batch, window), generator=gen)
        y = torch.randint(0, vocab, (batch, window), generator=gen)
        lms = {}
        for name in models:
            cell, options = variant_cell(name, proj)
            torch.manual_seed(0)
            lms[name] = WordLM(vocab, proj, hidden, cell=cell, num_sampled=min(samples, vocab), single_bias=True,
                               **options)

        def step(lm: WordLM, x: torch.Tensor = x, y: torch.Tensor = y) -> Callable[[], None]:
            def run() -> None:
                lm.zero_grad(set_to_none=True)
                loss, _ = lm(x, None, y, torch.Generator().manual_seed(1))
                loss.backward()

            return run

        times = compare({name: step(lm) for name, lm in lms.items()}, repeats=repeats, warmup=1)
        base = batch * window / times[models[0]]
        for name, lm in lms.items():
            wps = batch * window / times[name]
            rows.append(LMRow(proj, hidden, name, sum(p.numel() for p in lm.rnn.parameters()), times[name] * 1e3,
                              wps, wps / base))
    return rows


LM_TEXT = """## Word language models (Kuchaiev & Ginsburg): training words/s

One training step of the whole word LM (embedding, 2 recurrent layers with projection p,
n = 8p cells, sampled softmax with {samples} of {vocab:,} words, backward), batch {batch} ×
{window} words, float32, {threads} thread(s); ratio = words/s ÷ LSTMP's at the same p, n.
The paper's ratios (4 GPUs, p = 1024, n = 8192) are the floor to beat.

| p | n | model | RNN parameters | ms / step | words/s | × LSTMP | paper × |
|---:|---:|---|---:|---:|---:|---:|---:|
"""


def render_lm(rows: list[LMRow], *, batch: int, window: int, vocab: int, samples: int) -> str:
    parts = [LM_TEXT.format(samples=samples, vocab=vocab, batch=batch, window=window,
                            threads=torch.get_num_threads())]
    for r in rows:
        paper = "—" if r.paper_ratio is None else f"{r.paper_ratio:.2f}"
        parts.append(f"| {r.proj} | {r.hidden} | {r.model} | {r.rnn_parameters:,} | {r.ms:.1f} | "
                     f"{r.words_per_second:,.0f} | {r.ratio:.2f} | {paper} |\n")
    return "".join(parts)
