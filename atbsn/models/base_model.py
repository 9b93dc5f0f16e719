"""What every training method provides to the method-agnostic loop and to inference.

A model owns its networks (by role name, e.g. ``net``, ``teacher``/``student``) and defines:

* ``training_step(batch, progress) -> {'loss': total, ...named terms}``: the method's objective.
  The loop does backward, AMP scaling, clipping, optimiser and scheduler steps.
* ``denoise(noisy)``: [0,1] NCHW in, [0,1] NCHW out, for any image size; the default scales to
  the network's value range, pads to its multiple, runs it and crops back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionsError


@dataclass
class Progress:
    """Where training stands, for objectives that change over time (e.g. N2N's ramp)."""

    iteration: int  # 0-based index of the current iteration
    total_iter: int
    epoch: int  # 0-based
    iters_per_epoch: int

    @property
    def total_epochs(self) -> int:
        return max(1, -(-self.total_iter // self.iters_per_epoch))


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect", square: bool = False) -> torch.Tensor:
    """Pad at the bottom and right so H and W are multiples of ``multiple`` (a square if asked)."""
    h, w = x.shape[-2:]
    th, tw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if square:
        th = tw = max(th, tw)
    if (th, tw) == (h, w):
        return x
    if mode == "reflect" and (th - h >= h or tw - w >= w):
        mode = "replicate"  # reflect cannot pad by more than the size: fall back for tiny images
    return F.pad(x, (0, tw - w, 0, th - h), mode=mode)


class DenoisingModel:
    network_roles: tuple = ("net",)  # names expected under ``networks:`` in the options
    trainable_roles: tuple = ("net",)
    inference_role: str = "net"
    value_scale: float = 1.0  # networks work on [0, value_scale]

    def __init__(self, networks: Dict[str, nn.Module]):
        expected, given = set(self.network_roles), set(networks)
        if expected != given:
            raise OptionsError(
                f"model {type(self).__name__} needs networks {sorted(expected)} under 'networks:', got {sorted(given)}"
            )
        self.networks = nn.ModuleDict(networks)
        self._runners: Dict[str, Callable] = {}
        self.padding_mode, self.pad_square = "reflect", False
        self.channels_last = False
        self.amp_dtype: Optional[torch.dtype] = None

    # -- plumbing used by the loop ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.networks.parameters()).device

    def to(self, device) -> "DenoisingModel":
        self.networks.to(device)
        return self

    def run(self, role: str, *args, **kwargs):
        """Call a network through its runner (compiled / distributed wrapper) when one is set."""
        return self._runners.get(role, self.networks[role])(*args, **kwargs)

    def set_runner(self, role: str, fn: Callable) -> None:
        self._runners[role] = fn

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        for role in self.trainable_roles:
            yield from self.networks[role].parameters()

    def train(self, mode: bool = True) -> None:
        for role, net in self.networks.items():
            net.train(mode and role in self.trainable_roles)

    def input_multiple(self) -> int:
        return int(getattr(self.networks[self.inference_role], "input_multiple", 1))

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- the method ------------------------------------------------------------------------------
    def check_options(self, opt: dict) -> None:
        """Reject options this method cannot train with (e.g. crop sizes), before anything runs."""

    def init_training(self) -> None:
        """Called once by the trainer after pretrained weights are loaded, before any resume."""

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def normalize(self, noisy: torch.Tensor):
        """(input for :meth:`denoise`, statistics): for methods whose inference normalises with
        statistics of the *whole* image (C-BSN), which tiling must not recompute per tile."""
        return noisy, None

    def denormalize(self, out: torch.Tensor, stats) -> torch.Tensor:
        return out

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inference network on a padded input on the network's value scale."""
        return self.run(self.inference_role, x)

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        x = self.prepare_input(noisy) * self.value_scale
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.input_multiple(), self.padding_mode, self.pad_square)
        with torch.autocast(x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.network_forward(x)
        return out[..., :h, :w].float() / self.value_scale
