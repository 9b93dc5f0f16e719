"""What every check yields and how errors are measured."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

TOL_NET = 1e-5  # networks: max error <= 1e-5 of the output scale
TOL_METRIC = 1e-6


@dataclass
class Result:
    file: str
    name: str
    rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel_err)) and self.rel_err <= self.tol


def rel_err(ours, ref) -> float:
    if isinstance(ours, torch.Tensor) or isinstance(ref, torch.Tensor):
        ours, ref = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
        if ours.shape != ref.shape:
            return float("inf")
        scale = ref.abs().max().item()
        return (ours - ref).abs().max().item() / (scale if scale > 0 else 1.0)
    return abs(float(ours) - float(ref)) / (abs(float(ref)) or 1.0)


def _load(folder: str, name: str) -> dict:
    return torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)
