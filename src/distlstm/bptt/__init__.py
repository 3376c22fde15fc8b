"""Training by back-propagation through time: full-batch second-order optimizers across workers."""

from distlstm.bptt.fullbatch import FullBatchConfig, fullbatch_closure, train_fullbatch

__all__ = ["FullBatchConfig", "fullbatch_closure", "train_fullbatch"]
