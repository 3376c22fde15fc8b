"""The ``es`` mode: one evolution-strategies generation per step of the run loop.

One step on worker r of W (population P, members [rP/W, (r+1)P/W) here)::

    x, y  ← the windows of generation g, drawn from (seed, g)       same on every worker
    F_r   ← fitness of this worker's members θ + σ ε_j on x, y       one batched forward
    F     ← all_gather(F_r)                                          P scalars, P × 4 bytes
    θ, m, v ← tell(F)                                                the same update everywhere
    check that θ is the same on every worker

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

from torch import Tensor

from distlstm._checks import check_positive_int
from distlstm._flags import option
from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, held_out_slice, load_text, split_ids
from distlstm.es.fitness import char_fitness, char_loss
from distlstm.es.strategy import STRATEGIES, ESConfig, ESState, ask, init, tell
from distlstm.es.text import build_model, generation_windows
from distlstm.models.functional import assign
from distlstm.models.networks import CharLM
from distlstm.modes import LoadedRun
from distlstm.runs.config import flag
from distlstm.runtime.comm import Communicator

CELLS = ("rnn", "lstm")
# The loop's defaults for ES: generations are the loop's steps.
LOOP_DEFAULTS: Mapping[str, Any] = {"steps": 500, "eval_every": 25, "checkpoint_every": 50}


@dataclass(frozen=True)
class ESRunConfig:
    """What ``distlstm es`` trains: the text, the one-hot character model, the strategy and its settings.

    The number of generations, the time budget and the seed are the loop's
    (:class:`~distlstm.runs.config.LoopConfig`: ``steps``, ``seconds``, ``seed``).
    """

    text: str | None = flag(None, "UTF-8 training text; the last 10%% is held out for validation (default: the "
                                  "shipped Shakespeare tragedies)", metavar="FILE", path=True)
    cell: str = flag("rnn", "recurrent cell of the one-hot character model (rnn: the ES source's model)",
                     choices=CELLS)
    hidden: int = flag(64, "hidden units", metavar="N")
    strategy: str = flag("openai-es", "openai-es: mirrored sampling, centred ranks, Adam, weight decay; plain: the "
                                      "source's rule (independent noise, z-scored fitness, θ ← θ + α g)",
                         choices=tuple(STRATEGIES))
    population: int = flag(256, "members per generation P, split evenly over the workers (a multiple of their "
                                "number; even for openai-es's mirrored pairs)", metavar="P")
    sigma: float = flag(0.02, "perturbation standard deviation σ", metavar="SIGMA")
    lr: float = flag(0.01, "step size α", metavar="ALPHA")
    weight_decay: float | None = flag(None, "L2 weight decay λ (default: the strategy's, 0.005 for openai-es and 0 "
                                            "for plain)", metavar="LAMBDA")
    windows: int = flag(8, "text windows per generation, shared by every member", metavar="N")
    window: int = flag(32, "characters per window", metavar="CHARS")
    eval_chars: int = flag(20_000, "validation characters (from the start of the held-out part)",
                           metavar="CHARS")

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {CELLS}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")
        for name in ("hidden", "windows", "window", "eval_chars"):
            check_positive_int(getattr(self, name), name)
        for name in ("sigma", "lr", "weight_decay"):
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
                       seed=seed)

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
        if cfg.population % comm.world_size:
            raise ValueError(f"population {cfg.population} must be a multiple of the {comm.world_size} workers: "
                             "change the population or the number of processes")
        text = load_text(cfg.text if cfg.text is not None else SHAKESPEARE_TRAGEDIES)
        self.vocab = CharVocab.from_text(text)
        self.train_ids, val = split_ids(self.vocab.encode(text))
        if len(self.train_ids) <= cfg.window:
            raise ValueError(f"the training text has {len(self.train_ids)} characters, fewer than a window of "
                             f"{cfg.window} + 1: use a longer text or a shorter window")
        self.val_ids = held_out_slice(val, cfg.eval_chars)
        self.fm = build_model(len(self.vocab), cfg.cell, cfg.hidden, seed)
        self.state = init(self.fm.flatten())
        share = cfg.population // comm.world_size
        self.members = range(comm.rank * share, (comm.rank + 1) * share)

    def step(self, step: int) -> Mapping[str, float]:
        cfg, state = self.cfg, self.state
        x, y = generation_windows(self.train_ids, self.seed, state.generation, cfg.windows, cfg.window)
        mine = char_fitness(self.fm, ask(self.strategy, state, self.members), x, y)
        fitness = self.comm.all_gather_cat(mine)
        self.state, metrics = tell(self.strategy, state, fitness)
        self.comm.check_same(self.state.theta, f"generation {self.state.generation}")
        return {"train_nats_per_char": -metrics["fitness_mean"], "dropped": metrics["dropped"],
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
                              "generation": s.generation},
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

    def summary(self) -> dict[str, Any]:
        generation, population = self.state.generation, self.cfg.population
        return {"model": self.cfg.cell, "method": self.cfg.strategy, "generations": generation,
                "evaluations": generation * population, "parameters": self.fm.numel,
                "fitness_bytes_per_generation": population * self.state.theta.element_size()}

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
