"""Experiments: reproductions and demos that write a run folder (config, CSV, PNG, report)."""
