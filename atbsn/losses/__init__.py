"""Pixel losses by name; method-specific objectives live with their model."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

LOSS_REGISTRY = Registry("loss")


@LOSS_REGISTRY.register()
class L1Loss(nn.Module):
    def __init__(self, weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.weight, self.reduction = weight, reduction

    def forward(self, pred, target):
        return self.weight * nn.functional.l1_loss(pred, target, reduction=self.reduction)


@LOSS_REGISTRY.register()
class MSELoss(nn.Module):
    def __init__(self, weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.weight, self.reduction = weight, reduction

    def forward(self, pred, target):
        return self.weight * nn.functional.mse_loss(pred, target, reduction=self.reduction)


@LOSS_REGISTRY.register()
class CharbonnierLoss(nn.Module):
    def __init__(self, weight: float = 1.0, eps: float = 1e-12):
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, pred, target):
        return self.weight * torch.sqrt((pred - target) ** 2 + self.eps).mean()


def build_loss(cfg: dict, where: str = "loss") -> nn.Module:
    return LOSS_REGISTRY.build(cfg, where=where)


__all__ = ["LOSS_REGISTRY", "build_loss", "L1Loss", "MSELoss", "CharbonnierLoss"]
