"""Process groups: the one place that reads the launcher's environment."""

from distlstm.runtime.dist import (
    DistEnv,
    all_gather_cat,
    all_reduce_,
    broadcast_,
    check_same_across_ranks,
    collective_device,
    init_distributed,
    launched_env,
    process_group,
    shutdown_distributed,
    worker_env,
)

__all__ = ["DistEnv", "all_gather_cat", "all_reduce_", "broadcast_", "check_same_across_ranks", "collective_device",
           "init_distributed", "launched_env", "process_group", "shutdown_distributed", "worker_env"]
