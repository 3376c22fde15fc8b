"""Process groups: the one place that reads the launcher's environment."""

from distlstm.runtime.dist import (
    DistEnv,
    all_gather_cat,
    check_same_across_ranks,
    init_distributed,
    launched_env,
    process_group,
    shutdown_distributed,
    worker_env,
)

__all__ = ["DistEnv", "all_gather_cat", "check_same_across_ranks", "init_distributed", "launched_env",
           "process_group", "shutdown_distributed", "worker_env"]
