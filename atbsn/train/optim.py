"""Optimisers and learning-rate schedules: torch's own classes, registered by name.

Schedulers are stepped once per iteration. So that changing ``train.total_iter`` alone keeps a
schedule's shape, every period (``T_max``, ``step_size``, ``milestones``) may be written as a
fraction of the run: a float in (0, 1] is that fraction of ``train.total_iter``, an integer counts
iterations (an explicit absolute value still wins). ``T_max`` defaults to the whole run, and
``ExponentialLR`` takes either ``gamma`` per iteration or ``final_factor``, the learning-rate factor
reached at the last iteration.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import optim
from torch.optim import lr_scheduler

from ..errors import OptionsError
from ..utils.periods import Period, iterations
from ..registry import NonNegativeFloat, PositiveFloat, Probability, Registry

OPTIMIZER_REGISTRY = Registry("optimizer")
Betas = Tuple[Probability, Probability]


# torch's classes with their options' allowed ranges declared, so that a bad value is an option error.
@OPTIMIZER_REGISTRY.register()
class Adam(optim.Adam):
    def __init__(self, params, lr: PositiveFloat = 1e-3, betas: Betas = (0.9, 0.999), eps: PositiveFloat = 1e-8,
                 weight_decay: NonNegativeFloat = 0.0, amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@OPTIMIZER_REGISTRY.register()
class AdamW(optim.AdamW):
    def __init__(self, params, lr: PositiveFloat = 1e-3, betas: Betas = (0.9, 0.999), eps: PositiveFloat = 1e-8,
                 weight_decay: NonNegativeFloat = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@OPTIMIZER_REGISTRY.register()
class SGD(optim.SGD):
    def __init__(self, params, lr: PositiveFloat = 1e-3, momentum: NonNegativeFloat = 0.0,
                 dampening: NonNegativeFloat = 0.0, weight_decay: NonNegativeFloat = 0.0, nesterov: bool = False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

SCHEDULER_REGISTRY = Registry("scheduler")

@SCHEDULER_REGISTRY.register()
class CosineAnnealingLR(lr_scheduler.CosineAnnealingLR):
    """Cosine from the initial rate to ``eta_min`` over ``T_max`` (default: the whole run)."""

    def __init__(self, optimizer, total_iter: int, T_max: Period = 1.0, eta_min: NonNegativeFloat = 0.0):
        super().__init__(optimizer, T_max=iterations(T_max, total_iter, "train.scheduler.T_max"), eta_min=eta_min)


@SCHEDULER_REGISTRY.register()
class MultiStepLR(lr_scheduler.MultiStepLR):
    """Multiply the rate by ``gamma`` at each milestone."""

    def __init__(self, optimizer, total_iter: int, milestones: List[Period], gamma: PositiveFloat = 0.1):
        steps = [iterations(m, total_iter, f"train.scheduler.milestones[{i}]") for i, m in enumerate(milestones)]
        super().__init__(optimizer, milestones=steps, gamma=gamma)


@SCHEDULER_REGISTRY.register()
class StepLR(lr_scheduler.StepLR):
    """Multiply the rate by ``gamma`` every ``step_size``."""

    def __init__(self, optimizer, total_iter: int, step_size: Period, gamma: PositiveFloat = 0.1):
        step = iterations(step_size, total_iter, "train.scheduler.step_size")
        if step < 1:
            raise OptionsError("'train.scheduler.step_size' must be at least 1 iteration")
        super().__init__(optimizer, step_size=step, gamma=gamma)


@SCHEDULER_REGISTRY.register()
class ExponentialLR(lr_scheduler.ExponentialLR):
    """Multiply the rate by ``gamma`` every iteration; or give ``final_factor`` (e.g. 0.01: the rate
    ends at 1% of its start whatever the run length) and gamma follows from ``train.total_iter``."""

    def __init__(self, optimizer, total_iter: int, gamma: Optional[PositiveFloat] = None,
                 final_factor: Optional[PositiveFloat] = None):
        if (gamma is None) == (final_factor is None):
            raise OptionsError("train.scheduler (ExponentialLR): give exactly one of 'gamma' (per iteration) and "
                               "'final_factor' (the factor reached at train.total_iter)")
        if final_factor is not None:
            if final_factor <= 0:
                raise OptionsError(f"'train.scheduler.final_factor' must be > 0, got {final_factor}")
            gamma = final_factor ** (1.0 / max(1, total_iter))
        super().__init__(optimizer, gamma=gamma)


def build_optimizer(cfg: dict, params):
    return OPTIMIZER_REGISTRY.build(cfg, where="train.optimizer", params=params)


def build_scheduler(cfg, optimizer, total_iter: int):
    if cfg is None:
        return None
    return SCHEDULER_REGISTRY.build(cfg, where="train.scheduler", optimizer=optimizer, total_iter=total_iter)
