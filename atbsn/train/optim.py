"""Optimisers and learning-rate schedules: torch's own classes, registered by name.

Schedulers are stepped once per iteration, so milestones / T_max / step_size count iterations.
"""
from torch import optim
from torch.optim import lr_scheduler

from ..registry import Registry

OPTIMIZER_REGISTRY = Registry("optimizer")
for _cls in (optim.Adam, optim.AdamW, optim.SGD):
    OPTIMIZER_REGISTRY.register(_cls)

SCHEDULER_REGISTRY = Registry("scheduler")
for _cls in (lr_scheduler.MultiStepLR, lr_scheduler.CosineAnnealingLR, lr_scheduler.StepLR, lr_scheduler.ExponentialLR):
    SCHEDULER_REGISTRY.register(_cls)


def build_optimizer(cfg: dict, params):
    return OPTIMIZER_REGISTRY.build(cfg, where="train.optimizer", params=params)


def build_scheduler(cfg, optimizer):
    return None if cfg is None else SCHEDULER_REGISTRY.build(cfg, where="train.scheduler", optimizer=optimizer)
