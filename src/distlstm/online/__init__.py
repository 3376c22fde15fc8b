"""Online training at every node and across a network (Ergen & Kozat).

Algorithms (registry :data:`ALGORITHMS`): ``sgd``, ``ekf``, ``pf`` run at every node
without communication; ``dsgd`` (diffusion SGD), ``dekf`` (diffusion EKF) and ``dpf``
(Markov-chain distributed PF) talk to graph neighbours through a transport. All run
through the ``online`` mode (:mod:`distlstm.modes.online`), one step of the run loop
per time step; :mod:`distlstm.online.records` holds what a run records.
"""

from __future__ import annotations

from typing import Any

from distlstm.models.functional import FunctionalModel
from distlstm.online.base import Observation, OnlineAlgorithm, Prediction
from distlstm.online.defaults import DEFAULT_SETTINGS, algorithm_settings, regressor
from distlstm.online.dekf import DEKF
from distlstm.online.dpf import DPF, DPFConfig
from distlstm.online.ekf import EKF, EKFConfig
from distlstm.online.pf import PF, PFConfig
from distlstm.online.sgd import SGD, DiffusionSGD, SGDConfig
from distlstm.online.stateful_ekf import StatefulEKF

ALGORITHMS: dict[str, tuple[type[OnlineAlgorithm], type]] = {
    "sgd": (SGD, SGDConfig),
    "ekf": (EKF, EKFConfig),
    "pf": (PF, PFConfig),
    "dsgd": (DiffusionSGD, SGDConfig),
    "dekf": (DEKF, EKFConfig),
    "dpf": (DPF, DPFConfig),
}


def make_algorithm(name: str, fm: FunctionalModel, **settings: Any) -> OnlineAlgorithm:
    """Build the algorithm ``name`` with its config from ``settings``.

    DPF takes ``walk_steps`` plus the particle settings of :class:`PFConfig`;
    ``ekf`` with ``stateful=True`` filters [carry; θ] (:class:`StatefulEKF`).
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {list(ALGORITHMS)}")
    cls, config_cls = ALGORITHMS[name]
    if config_cls is DPFConfig:
        walk = settings.pop("walk_steps", DPFConfig.walk_steps)
        cfg: Any = DPFConfig(walk_steps=walk, pf=PFConfig(**settings))
    else:
        cfg = config_cls(**settings)
    if name == "ekf" and cfg.stateful:
        return StatefulEKF(fm, cfg)
    return cls(fm, cfg)  # type: ignore[call-arg]


__all__ = ["ALGORITHMS", "DEFAULT_SETTINGS", "DEKF", "DPF", "EKF", "PF", "SGD", "DPFConfig", "DiffusionSGD",
           "EKFConfig", "Observation", "OnlineAlgorithm", "PFConfig", "Prediction", "SGDConfig", "StatefulEKF",
           "algorithm_settings", "make_algorithm", "regressor"]
