"""What every training method provides to the method-agnostic loop and to inference.

A model owns its networks (by role name, e.g. ``net``, ``teacher``/``student``) and defines:

* ``training_step(batch, progress) -> {'loss': total, ...named terms}``: the method's objective.
  The loop does backward, AMP scaling, clipping, optimiser and scheduler steps.
* ``denoise(noisy)``: [0,1] NCHW in, [0,1] NCHW out, for any image size, in three steps that
  tiling calls itself: ``prepare`` (whole image), ``denoise_tile`` (each tile), ``finish``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

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


def check_train_crop(model: "DenoisingModel", opt: dict) -> None:
    """``datasets.train.crop_size`` against the model's :meth:`~DenoisingModel.train_crop_multiple`."""
    crop = (opt["datasets"].get("train") or {}).get("crop_size")
    multiple, rule = model.train_crop_multiple()
    if crop is not None and crop % multiple:
        raise OptionsError(f"datasets.train.crop_size ({crop}) must be {rule}")


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
    # The method's pixel terms and the paper's loss for each: ``model.losses`` replaces any of them.
    default_losses: Dict[str, dict] = {}

    def __init__(self, networks: Dict[str, nn.Module], losses: Optional[Dict[str, dict]] = None):
        expected, given = set(self.network_roles), set(networks)
        if expected != given:
            raise OptionsError(
                f"model {type(self).__name__} needs networks {sorted(expected)} under 'networks:', got {sorted(given)}"
            )
        self.networks = nn.ModuleDict(networks)
        self.losses = self.build_losses(losses)
        self._runners: Dict[str, Callable] = {}
        self.padding_mode, self.pad_square = "reflect", False
        self.channels_last = False
        self.amp_dtype: Optional[torch.dtype] = None
        self.strength: Dict[str, Any] = {"mode": "full"}  # val.strength (atbsn.strength), set by setup_model

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

    def build_losses(self, losses: Optional[Dict[str, dict]]) -> Dict[str, nn.Module]:
        """``model.losses: {term: {type: CharbonnierLoss, weight: 1.0}}``, from the loss registry;
        terms not given keep the method's default."""
        from ..losses import build_loss

        given = dict(losses or {})
        unknown = sorted(set(given) - set(self.default_losses))
        if unknown:
            terms = ", ".join(sorted(self.default_losses)) or "none (its objective is not made of pixel losses)"
            raise OptionsError(f"model.losses: {type(self).__name__} has no term '{unknown[0]}'; its terms: {terms}")
        return {term: build_loss(given.get(term, default), where=f"model.losses.{term}")
                for term, default in self.default_losses.items()}

    # -- the method ------------------------------------------------------------------------------
    @classmethod
    def official_state_dict(cls, obj: dict, role: str, path: str) -> Optional[Dict[str, torch.Tensor]]:
        """The state dict for ``role`` when ``obj`` (a loaded file) is in the layout of this method's
        official release, else None; the common layouts are ``atbsn.weights``' business."""
        return None

    def train_crop_multiple(self) -> Tuple[int, str]:
        """(m, rule): training crops must be multiples of m; ``rule`` says so, and why, after
        "datasets.train.crop_size (N) must be". Checked once, by :func:`check_train_crop`."""
        m = self.input_multiple()
        return m, f"a multiple of {m}, the multiple the network {self.inference_role!r} takes inputs in"

    def check_options(self, opt: dict) -> None:
        """Reject options this method cannot train with, before anything runs (crop multiples are
        :meth:`train_crop_multiple`'s)."""

    def init_training(self) -> None:
        """Called once by the trainer after pretrained weights are loaded, before any resume."""

    def training_state(self) -> Dict[str, Any]:
        """What the method counts during training besides its weights (saved in every checkpoint,
        plain numbers only): e.g. D-BSN's overflow-guard hits."""
        return {}

    def load_training_state(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`training_state` on resume."""

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inference network on a padded input on the network's value scale."""
        return self.run(self.inference_role, x)

    # -- inference: the same contract for every method -------------------------------------------
    # ``denoise``: noisy [0,1] NCHW in, denoised [0,1] NCHW out, any size. Tiling (atbsn.inference)
    # calls the three steps itself: ``prepare`` once on the whole image, ``denoise_tile`` on each
    # tile of what it returns, ``finish`` once on the assembled result.
    def prepare(self, noisy: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Whole-image work that tiles must not redo (C-BSN: standardise with the image's own
        statistics and pad); returns (what tiles are cut from, context for :meth:`finish`)."""
        return noisy, None

    @torch.no_grad()
    def denoise_tile(self, x: torch.Tensor) -> torch.Tensor:
        """One tile: scale to the network's value range, pad to its multiple, run, crop back."""
        x = self.prepare_input(x) * self.value_scale
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.input_multiple(), self.padding_mode, self.pad_square)
        with torch.autocast(x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.network_forward(x)
        return out[..., :h, :w].float() / self.value_scale

    def finish(self, out: torch.Tensor, context: Any) -> torch.Tensor:
        return out

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor) -> torch.Tensor:
        x, context = self.prepare(noisy)
        return self.finish(self.denoise_tile(x), context)
