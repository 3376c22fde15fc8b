"""Process groups: the one place that reads the launcher's environment."""

from distlstm.runtime.dist import DistEnv, init_distributed, launched_env, shutdown_distributed

__all__ = ["DistEnv", "init_distributed", "launched_env", "shutdown_distributed"]
