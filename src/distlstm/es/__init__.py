"""Evolution strategies on a flat θ: ask/tell strategies, shared-seed noise, batched fitness."""

from distlstm.es.noise import member_noise, population_noise
from distlstm.es.shaping import SHAPINGS, centered_ranks, zscore
from distlstm.es.strategy import STRATEGIES, ESConfig, ESState, ask, es_gradient, init, tell

__all__ = ["SHAPINGS", "STRATEGIES", "ESConfig", "ESState", "ask", "centered_ranks", "es_gradient", "init",
           "member_noise", "population_noise", "tell", "zscore"]
