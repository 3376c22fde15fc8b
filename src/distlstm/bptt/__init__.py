"""Training by back-propagation through time across workers.

* ``ddp`` — synchronous data parallelism (DistributedDataParallel) with stateful
  stream shards and truncated BPTT, or minibatches of independent sequences;
* ``fullbatch`` — full-batch L-BFGS and nonlinear CG, loss and gradient summed over
  workers in every evaluation (the run-loop mode is ``distlstm.modes.fullbatch``);
* ``tasks`` — what those train (character LM, long-lag problems).
"""

from distlstm.bptt.ddp import DDPConfig, train_ddp
from distlstm.bptt.fullbatch import FullBatchConfig, FullBatchObjective
from distlstm.bptt.tasks import CharStreamTask, LongLagTask

__all__ = ["CharStreamTask", "DDPConfig", "FullBatchConfig", "FullBatchObjective", "LongLagTask", "train_ddp"]
