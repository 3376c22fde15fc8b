"""The ``es`` mode: one evolution-strategies generation per step of the run loop.

One step on worker r of W (population P, members [rP/W, (r+1)P/W) here)::

    x, y  ← the windows of generation g, drawn from (seed, g)       same on every worker
    F_r   ← fitness of this worker's members θ + σ ε_j on x, y       one batched forward
    F     ← all_gather(F_r)                                          P scalars, P × 4 bytes
    θ, m, v ← tell(F)                                                the same update everywhere
    check that θ is the same on every worker

**Federated ES** (``--data-split iid`` or ``by-play``): the training text is cut into C
client shards (:mod:`distlstm.data.text_shards`; each worker hosts C/W clients and keeps
only their shards). Every client scores *every* member on windows from its own shard::

    F_c   ← fitness of all P members on client c's windows, drawn from (seed, g, c)
    F     ← Σ_c F_c   of all_gather(F_c of this worker's clients)     C × P scalars in all
    θ, m, v ← tell(F)

so only fitnesses cross the wire, never text; summing in client order makes W workers
give the numbers of one process simulating the C clients.

The noise and the windows are functions of (seed, generation), so the state to resume
bit for bit is θ, the Adam moments m, v and the generation (no generator state). The
checkpoint's model is the :class:`~distlstm.models.networks.CharLM` state dict, and its
artifacts the vocabulary and the constructor arguments, so :func:`distlstm.load_run`
gives a character model ready to sample from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distlstm._checks import check_positive_int
from distlstm._flags import option
from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, held_out_slice, load_text
from distlstm.data.text_shards import HOLDOUTS, SPLITS, client_shards, holdout_split
from distlstm.es.fitness import char_fitness, char_loss
from distlstm.es.noise import NOISE_KINDS
from distlstm.es.strategy import STRATEGIES, ESConfig, ESState, ask, init, noise, tell
from distlstm.es.text import build_model, client_windows, generation_windows
from distlstm.models.functional import assign
from distlstm.models.networks import CharLM
from distlstm.modes import LoadedRun
from distlstm.runs.config import flag
from distlstm.runtime.comm import Communicator

CELLS = ("rnn", "lstm")
DATA_SPLITS = ("shared", *SPLITS)
# The loop's defaults for ES: generations are the loop's steps.
LOOP_DEFAULTS: Mapping[str, Any] = {"steps": 500, "eval_every": 25, "checkpoint_every": 50}


@dataclass(frozen=True)
class ESRunConfig:
    """What ``distlstm es`` trains: the text, the one-hot character model, the strategy and its settings.

    The number of generations, the time budget and the seed are the loop's
    (:class:`~distlstm.runs.config.LoopConfig`: ``steps``, ``seconds``, ``seed``).
    """

    text: str | None = flag(None, "UTF-8 training text; --holdout decides what is held out for validation "
                                  "(default: the shipped Shakespeare tragedies)", metavar="FILE", path=True)
    data_split: str = flag("shared", "shared: every worker scores its part of the population on windows shared by "
                                     "all; iid / by-play: federated ES, each client holds its own shard of the text "
                                     "(random chunks / whole plays, non-IID), scores every member on it and sends "
                                     "only the fitnesses", choices=DATA_SPLITS)
    clients: int | None = flag(None, "federated clients C, each with its own shard (default: one per worker; a "
                                     "multiple of the workers, which each host C/W of them)", metavar="C")
    holdout: str | None = flag(None, "validation text: tail (the last 10%%) or play (the last play of a text whose "
                                     "plays are titled above 'by William Shakespeare'); default tail for "
                                     "--data-split shared, play otherwise", choices=HOLDOUTS)
    cell: str = flag("rnn", "recurrent cell of the one-hot character model (rnn: the ES source's model)",
                     choices=CELLS)
    hidden: int = flag(64, "hidden units", metavar="N")
    strategy: str = flag("openai-es", "openai-es: mirrored sampling, centred ranks, Adam, weight decay; plain: the "
                                      "source's rule (independent noise, z-scored fitness, θ ← θ + α g)",
                         choices=tuple(STRATEGIES))
    population: int = flag(256, "members per generation P, split evenly over the workers (a multiple of their "
                                "number; even for openai-es's mirrored pairs); federated: all P on every client",
                           metavar="P")
    sigma: float = flag(0.02, "perturbation standard deviation σ", metavar="SIGMA")
    noise: str = flag("table", "how ε is rebuilt from the shared seeds: table (slices of one table of normals "
                               "that every worker holds, OpenAI-ES's trick: a gather instead of P draws; "
                               "max(2^24, 16 n_θ) floats, 64 MiB for small models) or seeded (a generator per "
                               "member); the two give different numbers, so a run resumes with its own",
                      choices=NOISE_KINDS)
    lr: float = flag(0.01, "step size α", metavar="ALPHA")
    lr_half_life: float | None = flag(None, "halve the step size every G generations: α_t = α · 2^(−t/G) "
                                            "(default: constant α)", metavar="G")
    weight_decay: float | None = flag(None, "L2 weight decay λ (default: the strategy's, 0.005 for openai-es and 0 "
                                            "for plain)", metavar="LAMBDA")
    windows: int = flag(8, "text windows per generation, shared by every member (federated: per client)",
                        metavar="N")
    window: int = flag(32, "characters per window", metavar="CHARS")
    eval_chars: int = flag(20_000, "validation characters (from the start of the held-out part)",
                           metavar="CHARS")
    compile: bool = flag(False, "run the population's forward through torch.compile (needs a C++ compiler; "
                                "seconds of compilation, then faster generations on the fixed window shapes)")

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {CELLS}")
        if self.data_split not in DATA_SPLITS:
            raise ValueError(f"unknown data split {self.data_split!r}; expected one of {DATA_SPLITS}")
        if self.holdout is not None and self.holdout not in HOLDOUTS:
            raise ValueError(f"unknown holdout {self.holdout!r}; expected one of {HOLDOUTS}")
        if self.clients is not None:
            check_positive_int(self.clients, "clients")
            if self.data_split == "shared":
                raise ValueError(f"--clients {self.clients} needs a federated --data-split (iid or by-play); "
                                 "with shared windows there are no clients")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        for name in ("hidden", "windows", "window", "eval_chars"):
            check_positive_int(getattr(self, name), name)
        for name in ("sigma", "lr", "weight_decay", "lr_half_life"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | None):
                raise TypeError(f"{name} must be a number, got {value!r}")
        try:  # population, sigma, lr and weight decay checked by the strategy
            self.strategy_config(seed=0)
        except ValueError as err:
            flags = [option(f, "--" + f.replace("_", "-")) for f in ("population", "sigma", "lr", "weight_decay")
                     if f.replace("_", " ") in str(err) or f in str(err)]
            raise ValueError(f"{err} (fix {' / '.join(flags)})" if flags else str(err)) from None

    def strategy_config(self, seed: int) -> ESConfig:
        """The ask/tell settings: the strategy's preset with this run's P, σ, α, λ and seed."""
        base = STRATEGIES[self.strategy]
        decay = base.weight_decay if self.weight_decay is None else self.weight_decay
        return replace(base, population=self.population, sigma=self.sigma, lr=self.lr, weight_decay=decay,
                       seed=seed, lr_half_life=self.lr_half_life, noise=self.noise)

    @property
    def federated(self) -> bool:
        return self.data_split != "shared"

    @property
    def held_out(self) -> str:
        """The validation part: the --holdout given, else tail for shared windows and play for federated ES."""
        return self.holdout or ("play" if self.federated else "tail")

    def model_config(self, vocab_size: int) -> dict[str, Any]:
        """The :class:`CharLM` constructor arguments."""
        return {"vocab_size": vocab_size, "hidden_size": self.hidden, "cell": self.cell}


class ESMode:
    """Evolution strategies on a character model; one step is one generation (see the module's text)."""

    name: str = "es"
    metric: str = "val_nats_per_char"
    plot_columns: Sequence[str] = ("train_nats_per_char", "val_nats_per_char")
    max_steps: int | None = None

    def __init__(self, cfg: ESRunConfig) -> None:
        self.cfg = cfg

    def init(self, comm: Communicator, seed: int) -> None:
        cfg = self.cfg
        self.comm, self.seed = comm, seed
        self.strategy = cfg.strategy_config(seed)
        text = load_text(cfg.text if cfg.text is not None else SHAKESPEARE_TRAGEDIES)
        self.vocab = CharVocab.from_text(text)
        ids = self.vocab.encode(text)
        segments, val = holdout_split(text, ids, cfg.held_out)
        self.train_ids = ids[: len(ids) - len(val)]
        if len(self.train_ids) <= cfg.window:
            raise ValueError(f"the training text has {len(self.train_ids)} characters, fewer than a window of "
                             f"{cfg.window} + 1: use a longer text or a shorter window")
        self.val_ids = held_out_slice(val, cfg.eval_chars)
        self.fm = build_model(len(self.vocab), cfg.cell, cfg.hidden, seed, compile=cfg.compile)
        self.state = init(self.fm.flatten())
        if not cfg.federated:
            if cfg.population % comm.world_size:
                raise ValueError(f"population {cfg.population} must be a multiple of the {comm.world_size} workers: "
                                 "change the population or the number of processes")
            share = cfg.population // comm.world_size
            self.members = range(comm.rank * share, (comm.rank + 1) * share)
            return
        self.clients = cfg.clients or comm.world_size
        if self.clients % comm.world_size:
            raise ValueError(f"--clients {self.clients} must be a multiple of the {comm.world_size} workers (each "
                             "hosts the same number of clients)")
        here = self.clients // comm.world_size
        shards = client_shards(segments, self.clients, cfg.data_split, seed=seed, min_length=cfg.window + 1)
        # the data stay with their client: this worker keeps its clients' shards and nothing else
        self.shards = {c: shards[c] for c in range(comm.rank * here, (comm.rank + 1) * here)}
        self.train_ids = torch.empty(0, dtype=ids.dtype)
        self.members = range(cfg.population)

    def step(self, step: int) -> Mapping[str, float]:
        cfg, state = self.cfg, self.state
        eps = noise(self.strategy, state, self.members)
        thetas = ask(self.strategy, state, self.members, eps)
        if cfg.federated:  # every client here scores every member on its own windows
            mine = torch.cat([char_fitness(self.fm, thetas, *client_windows(
                shard, self.seed, state.generation, c, cfg.windows, cfg.window)) for c, shard in self.shards.items()])
            fitness = self.comm.all_gather_cat(mine).view(self.clients, cfg.population).sum(0)
            scale = self.clients  # the summed fitness is C times a mean nats/char
        else:
            x, y = generation_windows(self.train_ids, self.seed, state.generation, cfg.windows, cfg.window)
            mine = char_fitness(self.fm, thetas, x, y)
            fitness, scale = self.comm.all_gather_cat(mine), 1
        self.state, metrics = tell(self.strategy, state, fitness, eps if len(self.members) == cfg.population else None)
        self.comm.check_same(self.state.theta, f"generation {self.state.generation}")
        return {"train_nats_per_char": -metrics["fitness_mean"] / scale, "dropped": metrics["dropped"],
                "bytes_per_worker": float(mine.numel() * mine.element_size())}

    def evaluate(self) -> Mapping[str, float]:
        return {"val_nats_per_char": char_loss(self.fm, self.state.theta, self.val_ids)}

    def model_state(self) -> dict[str, Tensor]:
        """The CharLM state dict at the current θ."""
        assign(self.fm.module, self.state.theta)  # the module is only a template: fitness calls pass θ explicitly
        return {k: v.detach().clone() for k, v in self.fm.module.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {"model": self.model_state(),
                "algorithm": {"theta": s.theta.clone(), "m": s.m.clone(), "v": s.v.clone(),
                              "generation": s.generation, "noise": self.strategy.noise},
                "generators": {},  # none: the noise and windows are drawn from (seed, generation)
                "artifacts": {"kind": "char-lm", "vocab": self.vocab.chars,
                              "config": self.cfg.model_config(len(self.vocab)), "dtype": "float32"}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        chars = state["artifacts"]["vocab"]
        if chars != self.vocab.chars:
            raise ValueError(f"the run was trained on a text with the {len(chars)}-character vocabulary {chars!r}; "
                             f"{self.cfg.text or SHAKESPEARE_TRAGEDIES} now has {self.vocab.chars!r} (the text "
                             "changed): resume with the original text or start a new run")
        alg = state["algorithm"]
        theta = alg["theta"]
        if tuple(theta.shape) != (self.fm.numel,):
            raise ValueError(f"the checkpoint's θ has shape {tuple(theta.shape)}, the model needs ({self.fm.numel},)")
        self.state = ESState(theta.clone(), alg["m"].clone(), alg["v"].clone(), int(alg["generation"]))
        # a checkpoint without "noise" predates the noise table (its config has no --noise, which then reads
        # as the default): it continues with the per-member generators it was trained with
        self.strategy = replace(self.strategy, noise=str(alg.get("noise", "seeded")))

    def summary(self) -> dict[str, Any]:
        generation, population = self.state.generation, self.cfg.population
        clients = self.clients if self.cfg.federated else 1
        return {"model": self.cfg.cell, "method": self.cfg.strategy, "generations": generation,
                "evaluations": generation * population * clients, "parameters": self.fm.numel,
                "data_split": self.cfg.data_split, "clients": clients,
                "fitness_bytes_per_generation": clients * population * self.state.theta.element_size()}

    def write_outputs(self, folder: Path, rows: Iterable[Mapping[str, Any]]) -> None:
        """Nothing beyond the loop's files: the checkpoint is the model."""


def load(ckpt: Mapping[str, Any], folder: Path) -> LoadedRun:
    """The character model of an ``es`` run, with its vocabulary (``artifacts["vocab"]``, a string)."""
    state = ckpt["state"]
    artifacts = dict(state["artifacts"])
    model = CharLM(**artifacts["config"])
    model.load_state_dict(state["model"])
    config = dict(ckpt["config"])
    return LoadedRun(folder=Path(folder), mode="es", command=str(config.get("command", "es")),
                     step=int(ckpt["step"]), config=config, model=model.eval(), artifacts=artifacts)
