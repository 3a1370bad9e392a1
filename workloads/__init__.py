"""Workload descriptions: what is being trained (and, later, served)."""

from sysplan.workloads.training import TrainJob

__all__ = ["TrainJob"]
