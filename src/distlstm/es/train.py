"""Training a character model with evolution strategies, alone or across workers.

Every random choice is a function of (seed, generation): the members' noise, and the
text windows all members share in a generation. So workers agree without talking,
except for one ``all_gather`` of scalar fitnesses per generation (P numbers in all,
O(P) bytes, not O(n_θ)), and a resumed run continues with exactly the numbers of an
uninterrupted one. Worker r evaluates members [r·P/W, (r+1)·P/W) in one batched call;
every worker then applies the identical update, and a two-number checksum of θ is
compared across workers after every generation (a divergence is an error).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, load_text, random_windows, split_ids
from distlstm.es.fitness import char_fitness, char_loss
from distlstm.es.noise import noise_seed
from distlstm.es.strategy import STRATEGIES, ESConfig, ESState, ask, init, tell
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import CharLM
from distlstm.runs import load_checkpoint, save_checkpoint, write_csv
from distlstm.runtime.dist import all_gather_cat, check_same_across_ranks

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ESRunConfig:
    text: str = str(SHAKESPEARE_TRAGEDIES)
    cell: str = "rnn"  # rnn (the source's model) or lstm
    hidden: int = 64
    strategy: str = "openai-es"
    population: int = 256
    sigma: float = 0.02
    lr: float = 0.01
    weight_decay: float | None = None  # None: the strategy's default
    windows: int = 8  # text windows shared by all members in a generation
    window: int = 32  # characters per window
    generations: int = 500
    seconds: float | None = None  # stop after this wall time, whichever comes first
    eval_every: int = 25
    eval_chars: int = 20_000
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        for name in ("hidden", "windows", "window", "generations", "eval_every", "eval_chars", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def es_config(self) -> ESConfig:
        base = STRATEGIES[self.strategy]
        wd = base.weight_decay if self.weight_decay is None else self.weight_decay
        return replace(base, population=self.population, sigma=self.sigma, lr=self.lr, weight_decay=wd,
                       seed=self.seed)


def build_model(vocab_size: int, cell: str, hidden: int, seed: int) -> FunctionalModel:
    """The one-hot character model, initialised from ``seed``."""
    torch.manual_seed(seed)
    return FunctionalModel(CharLM(vocab_size, hidden, cell=cell))


def generation_windows(ids: torch.Tensor, cfg: ESRunConfig, generation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows every member is scored on in ``generation`` (the same on every worker)."""
    gen = torch.Generator().manual_seed(noise_seed(cfg.seed, generation, -1))
    return random_windows(ids, cfg.windows, cfg.window, gen)


def save_es_checkpoint(path: Path, state: ESState, cfg: ESRunConfig, vocab: CharVocab,
                       rows: list[dict[str, float]]) -> None:
    save_checkpoint(path, {"version": CHECKPOINT_VERSION, "theta": state.theta, "m": state.m, "v": state.v,
                           "generation": state.generation, "config": asdict(cfg), "vocab": vocab.chars,
                           "rows": rows})


def load_es_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')!r}, expected {CHECKPOINT_VERSION}")
    return ckpt


def train_es(cfg: ESRunConfig, out: Path, *, resume: bool = False, show_progress: bool = True,
             rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Run ES; rank 0 writes ``metrics.csv`` and ``checkpoint.pt`` into ``out``. Returns the summary."""
    es_cfg = cfg.es_config()
    if es_cfg.population % world_size:
        raise ValueError(f"population {es_cfg.population} must be a multiple of the {world_size} workers")
    text = load_text(cfg.text)
    vocab = CharVocab.from_text(text)
    train, val = split_ids(vocab.encode(text))
    if len(train) <= cfg.window:
        raise ValueError(f"the training text has {len(train)} characters, fewer than a window of {cfg.window} + 1")
    fm = build_model(len(vocab), cfg.cell, cfg.hidden, cfg.seed)
    state, rows = init(fm.flatten()), []
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = load_es_checkpoint(ckpt_path)
        if ckpt["vocab"] != vocab.chars:
            raise ValueError(f"{ckpt_path} was trained on another vocabulary")
        state = ESState(ckpt["theta"], ckpt["m"], ckpt["v"], int(ckpt["generation"]))
        rows = list(ckpt["rows"])
    share = es_cfg.population // world_size
    members = range(rank * share, (rank + 1) * share)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    val_ids = val[: cfg.eval_chars + 1]
    start = time.perf_counter()
    elapsed_before = rows[-1]["seconds"] if rows else 0.0
    bar = tqdm(total=cfg.generations, initial=state.generation, desc=f"ES {cfg.cell}", disable=not (
        show_progress and main), unit="gen")
    while state.generation < cfg.generations:
        if cfg.seconds is not None and time.perf_counter() - start + elapsed_before >= cfg.seconds:
            break
        x, y = generation_windows(train, cfg, state.generation)
        mine = char_fitness(fm, ask(es_cfg, state, members), x, y)
        fitness = all_gather_cat(mine)
        state, metrics = tell(es_cfg, state, fitness)
        check_same_across_ranks(state.theta, f"generation {state.generation}")
        bar.update()
        if state.generation % cfg.eval_every == 0 or state.generation == cfg.generations:
            row = {"generation": state.generation, "seconds": round(time.perf_counter() - start + elapsed_before, 3),
                   "evaluations": state.generation * es_cfg.population,
                   "train_nats_per_char": round(-metrics["fitness_mean"], 5),
                   "val_nats_per_char": round(char_loss(fm, state.theta, val_ids), 5),
                   "dropped": metrics["dropped"], "bytes_per_worker": share * mine.element_size()}
            rows.append(row)
            bar.set_postfix(val=f"{row['val_nats_per_char']:.3f}")
        if main and state.generation % cfg.checkpoint_every == 0:
            save_es_checkpoint(ckpt_path, state, cfg, vocab, rows)
    bar.close()
    if not rows or rows[-1]["generation"] != state.generation:
        rows.append({"generation": state.generation, "seconds": round(time.perf_counter() - start + elapsed_before, 3),
                     "evaluations": state.generation * es_cfg.population, "train_nats_per_char": math.nan,
                     "val_nats_per_char": round(char_loss(fm, state.theta, val_ids), 5), "dropped": 0.0,
                     "bytes_per_worker": share * 4})
    if main:
        save_es_checkpoint(ckpt_path, state, cfg, vocab, rows)
        write_csv(out / "metrics.csv", rows)
    last = rows[-1]
    return {"model": cfg.cell, "method": cfg.strategy, "val_nats_per_char": last["val_nats_per_char"],
            "seconds": last["seconds"], "evaluations": last["evaluations"], "generations": state.generation,
            "parameters": fm.numel, "workers": world_size,
            "fitness_bytes_per_generation": es_cfg.population * 4, "theta": state.theta}
