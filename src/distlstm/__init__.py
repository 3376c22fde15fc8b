"""distlstm: train LSTM networks across many workers.

One model code (cells, sequence runner, heads, flat-parameter functional API) shared
by every training algorithm. Start with :class:`distlstm.LSTM`, a drop-in for
``torch.nn.LSTM`` with a choice of cell.
"""

from distlstm.models import (
    CELLS,
    LSTM,
    CharLM,
    FunctionalModel,
    ParamSpec,
    SequenceRegressor,
    make_cell,
)

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "LSTM",
    "CharLM",
    "FunctionalModel",
    "ParamSpec",
    "SequenceRegressor",
    "__version__",
    "make_cell",
]
