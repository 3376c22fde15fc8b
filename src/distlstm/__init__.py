"""distlstm: train LSTM networks across many workers.

One model code (cells, sequence runner, heads, flat-parameter functional API) shared
by every training algorithm. Start with :class:`distlstm.LSTM`, a drop-in for
``torch.nn.LSTM`` with a choice of cell; :func:`distlstm.load_run` takes the trained
model out of any run folder.
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
from distlstm.modes import LoadedRun, load_run

__version__ = "0.2.0"

__all__ = [
    "CELLS",
    "LSTM",
    "CharLM",
    "FunctionalModel",
    "LoadedRun",
    "ParamSpec",
    "SequenceRegressor",
    "__version__",
    "load_run",
    "make_cell",
]
