"""Models: cells, the sequence runner and stack, heads, whole networks, the functional θ API."""

from distlstm.models.cells import (
    CELLS,
    Cell,
    FLSTMCell,
    GLSTMCell,
    LSTMCell,
    LSTMState,
    PeepholeLSTMCell,
    RNNCell,
    RNNState,
    lstm_pointwise,
    make_cell,
    register_cell,
)
from distlstm.models.functional import FunctionalModel, ParamSpec, assign, flatten
from distlstm.models.heads import RegressionHead, SoftmaxHead, pool, sequence_cross_entropy
from distlstm.models.networks import CharLM, SequenceRegressor
from distlstm.models.sequence import LSTM, run_layer

__all__ = [
    "CELLS",
    "LSTM",
    "Cell",
    "CharLM",
    "FLSTMCell",
    "FunctionalModel",
    "GLSTMCell",
    "LSTMCell",
    "LSTMState",
    "ParamSpec",
    "PeepholeLSTMCell",
    "RNNCell",
    "RNNState",
    "RegressionHead",
    "SequenceRegressor",
    "SoftmaxHead",
    "assign",
    "flatten",
    "lstm_pointwise",
    "make_cell",
    "pool",
    "register_cell",
    "run_layer",
    "sequence_cross_entropy",
]
