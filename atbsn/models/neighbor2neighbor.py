"""Neighbor2Neighbor (Huang et al., CVPR 2021): self-supervised denoising from single noisy images.

A random neighbour sub-sampler splits each noisy image y into two half-resolution images g1(y)
and g2(y) whose pixels are adjacent in the original, so their noise is independent while their
content is nearly the same. The network learns f(g1(y)) ~ g2(y); a regulariser makes the
sub-sampled full-resolution output consistent with that:

    L = L_rec + Lambda(e) * L_reg,   L_rec = |f(g1 y) - g2 y|^2,
    L_reg = |f(g1 y) - g2 y - (g1 f(y) - g2 f(y))|^2,   Lambda(e) = increase_ratio * e / E
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import OptionsError
from .base_model import DenoisingModel, Progress

# The 8 ordered pairs of 4-adjacent positions in a 2x2 cell (0=TL, 1=TR, 2=BL, 3=BR).
NEIGHBOR_PAIRS = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [1, 0], [2, 0], [3, 1], [3, 2]])


def draw_neighbor_pairs(n: int, h: int, w: int, seeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One uniform draw over the 8 pairs per 2x2 cell, shared by all channels: int64 [N, H/2, W/2, 2].

    With ``seeds`` (one per image, from the data pipeline) the draw of each image is a pure function
    of its seed; otherwise the global generator is used.
    """
    if seeds is None:
        r = torch.randint(0, 8, (n, h // 2, w // 2))
    else:
        r = torch.stack([torch.randint(0, 8, (h // 2, w // 2), generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds])
    return NEIGHBOR_PAIRS[r]


def subsample(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Pick, in every 2x2 cell, the pixel at ``positions`` [N, H/2, W/2]: pixel-unshuffle + gather."""
    n, c, h, w = x.shape
    cells = F.pixel_unshuffle(x, 2).view(n, c, 4, h // 2, w // 2)
    index = positions.view(n, 1, 1, h // 2, w // 2).expand(n, c, 1, h // 2, w // 2)
    return cells.gather(2, index).squeeze(2)


def neighbor2neighbor_loss(
    out_sub1: torch.Tensor, sub2: torch.Tensor, full_sub1: torch.Tensor, full_sub2: torch.Tensor, reg_weight: float,
    lambda_rec: float = 1.0, lambda_reg: float = 1.0, rec_loss: Optional[Callable] = None,
    reg_loss: Optional[Callable] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, L_rec, L_reg) from f(g1 y), g2 y, g1 f(y) and g2 f(y); the two terms are mean squared
    errors unless ``rec_loss`` / ``reg_loss`` (pred, target) say otherwise."""
    mse = F.mse_loss
    diff = out_sub1 - sub2
    exp_diff = full_sub1 - full_sub2
    loss_rec = (rec_loss or mse)(out_sub1, sub2)
    loss_reg = (reg_loss or mse)(diff, exp_diff)
    return lambda_rec * loss_rec + lambda_reg * reg_weight * loss_reg, loss_rec, loss_reg


class Neighbor2Neighbor(DenoisingModel):
    """Trains any registered network with the neighbour sub-sampler; inference is one plain pass."""

    default_losses = {"rec": {"type": "MSELoss"}, "reg": {"type": "MSELoss"}}

    def __init__(self, networks, lambda_rec: float = 1.0, lambda_reg: float = 1.0, increase_ratio: float = 2.0,
                 losses: Optional[Dict[str, dict]] = None):
        super().__init__(networks, losses)
        self.lambda_rec, self.lambda_reg, self.increase_ratio = lambda_rec, lambda_reg, increase_ratio

    def train_crop_multiple(self):
        m = 2 * self.input_multiple()
        return m, (f"a multiple of {m}: Neighbor2Neighbor trains on half-resolution sub-images that the network "
                   f"needs in multiples of {m // 2}")

    def regulariser_weight(self, progress: Progress) -> float:
        """Lambda(e) = increase_ratio * e / E for 1-based epoch e: 0.02 -> 2.0 over 100 epochs."""
        return self.increase_ratio * (progress.epoch + 1) / progress.total_epochs

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        noisy = self.prepare_input(batch["noisy"])
        n, _, h, w = noisy.shape
        multiple = 2 * self.input_multiple()
        if h % multiple or w % multiple:
            raise OptionsError(f"Neighbor2Neighbor trains on half-resolution sub-images, so training crops must be "
                               f"multiples of {multiple}; got {h}x{w} (datasets.train.crop_size)")
        pairs = draw_neighbor_pairs(n, h, w, batch.get("seed")).to(noisy.device)
        sub1, sub2 = subsample(noisy, pairs[..., 0]), subsample(noisy, pairs[..., 1])
        with torch.no_grad():
            full = self.run("net", noisy)
            full_sub1, full_sub2 = subsample(full, pairs[..., 0]), subsample(full, pairs[..., 1])
        out_sub1 = self.run("net", sub1)
        weight = self.regulariser_weight(progress)
        loss, loss_rec, loss_reg = neighbor2neighbor_loss(
            out_sub1, sub2, full_sub1, full_sub2, weight, self.lambda_rec, self.lambda_reg, self.losses["rec"],
            self.losses["reg"])
        return {"loss": loss, "loss_rec": loss_rec.detach(), "loss_reg": loss_reg.detach()}
