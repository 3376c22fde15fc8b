"""Training by back-propagation through time across workers.

* ``ddp`` — one step of synchronous data parallelism (DistributedDataParallel) with
  stateful stream shards and truncated BPTT, or minibatches of independent sequences
  (the run: ``distlstm.modes.ddp.DDPMode``);
* ``fullbatch`` — full-batch L-BFGS and nonlinear CG, loss and gradient summed over
  workers in every evaluation (the run-loop mode is ``distlstm.modes.fullbatch``);
* ``tasks`` — what those train (character LM, long-lag problems).
"""

from distlstm.bptt.ddp import ddp_step, make_optimizer
from distlstm.bptt.fullbatch import FullBatchConfig, FullBatchObjective
from distlstm.bptt.tasks import CharStreamTask, LongLagTask

__all__ = ["CharStreamTask", "FullBatchConfig", "FullBatchObjective", "LongLagTask", "ddp_step", "make_optimizer"]
