"""C-BSN (Jang et al., ICCV 2023): conditional blind-spot network with downsampled invariance loss.

One network f runs in two modes on per-channel standardised patches x:

* blind, on stride-5 space-to-batch sub-images (spatially correlated real noise is nearly
  independent 5 px apart), each zero-padded on its own: ``yb = B2S5(f(S2B5(x); blind))``;
* blind, without gradient, on a random stride-2 sub-image: ``yi = f(RS2(x); blind)``;
* non-blind on the full patch: ``yn = f(x; non-blind)``.

    L = |yb - x| + s(t) (|yn - x| + lambda |RS2(yn) - sg(yi)|),   s(t) = min(t / 200k, 1)

The last term (downsampled invariance) asks the non-blind output, sub-sampled with the *same*
index map, to agree with the blind output on the sub-image, which transfers the blind network's
noise removal to the full-resolution non-blind mode used at inference.

Inference: standardise with whole-image statistics, reflect-pad 32 px (> the receptive radius 29),
one non-blind pass, crop, de-standardise, clip; :func:`atbsn.utils.image.quantize` rounds.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import OptionsError
from ..utils.periods import iterations
from .base_model import DenoisingModel, Progress
from .neighbor2neighbor import subsample


def standardize(x: torch.Tensor, std_floor: Optional[float] = None) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """Per-image, per-channel (x - mean) / max(std, floor), population std over H x W; the floor
    defaults to 1 / sqrt(H W) (1 / patch size for square training patches)."""
    h, w = x.shape[-2:]
    floor = 1.0 / math.sqrt(h * w) if std_floor is None else std_floor
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(floor)
    return (x - mean) / std, (mean, std)


def local_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Box mean over ``window`` x ``window`` pixels (edges replicated), per image and channel."""
    lo, hi = window // 2, window - 1 - window // 2
    return F.avg_pool2d(F.pad(x, (lo, hi, lo, hi), mode="replicate"), window, stride=1)


def space_to_batch(x: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, C, H, W] -> [s*s*B, C, H/s, W/s]: every phase offset becomes its own image, offset-major
    (index = offset * B + b, as TF's SpaceToBatch)."""
    b, c, h, w = x.shape
    cells = F.pixel_unshuffle(x, stride).view(b, c, stride * stride, h // stride, w // stride)
    return cells.permute(2, 0, 1, 3, 4).reshape(stride * stride * b, c, h // stride, w // stride)


def batch_to_space(y: torch.Tensor, stride: int) -> torch.Tensor:
    n, c, h, w = y.shape
    b = n // (stride * stride)
    cells = y.view(stride * stride, b, c, h, w).permute(1, 2, 0, 3, 4).reshape(b, c * stride * stride, h, w)
    return F.pixel_shuffle(cells, stride)


def draw_cell_indices(n: int, h: int, w: int, seeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RS2's index map: one uniform k in {0..3} per 2x2 cell and image, (dy, dx) = (k // 2, k % 2),
    shared by the channels; per-image seeds make it a pure function of the data pipeline."""
    if seeds is None:
        return torch.randint(0, 4, (n, h // 2, w // 2))
    return torch.stack([torch.randint(0, 4, (h // 2, w // 2), generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


class CBSNModel(DenoisingModel):
    """Trains a network with ``forward(x, blind)`` (``CBSN``) by the three-pass C-BSN objective."""

    default_losses = {"blind": {"type": "L1Loss"}, "self": {"type": "L1Loss"}, "invariance": {"type": "L1Loss"}}

    def __init__(self, networks, invariance_weight: float = 2.0, ramp_iters: Union[int, float] = 0.4,
                 blind_stride: int = 5, inference_pad: int = 32, clip_output: bool = True,
                 centering: str = "none", centering_window: int = 61, losses: Optional[Dict[str, dict]] = None):
        """``ramp_iters``: iterations, or a float in (0, 1], a fraction of ``train.total_iter`` (official:
        200k of 500k, i.e. 0.4). ``centering: local_mean`` removes a ``centering_window`` box mean
        before standardising, in training and at inference alike, and adds it back after: training
        standardises each patch with its own statistics and inference the whole image, so without
        it dark regions sit far below anything the network saw in training (measured on CC15:
        +11.7 levels of red there; ``scripts/cbsn_inference_variants.py``). ``none``: the paper."""
        super().__init__(networks, losses)
        if blind_stride < 1 or inference_pad < 0:
            raise OptionsError("model: blind_stride must be >= 1 and inference_pad >= 0")
        if centering not in ("none", "local_mean") or centering_window < 1:
            raise OptionsError(f"model.centering must be 'none' or 'local_mean' (got {centering!r}) and "
                               f"model.centering_window >= 1")
        self.centering, self.centering_window = centering, centering_window
        iterations(ramp_iters, 1, "model.ramp_iters")  # checks its form; the run length is known at training
        self.invariance_weight, self.ramp_iters, self.blind_stride = invariance_weight, ramp_iters, blind_stride
        self.inference_pad, self.clip_output = inference_pad, clip_output

    @property
    def patch_multiple(self) -> int:
        return self.blind_stride * 2 // math.gcd(self.blind_stride, 2)

    def train_crop_multiple(self):
        m = self.patch_multiple
        return m, (f"divisible by both strides of C-BSN (the blind stride {self.blind_stride} and the sub-sampler's "
                   f"2), i.e. a multiple of {m}, e.g. {12 * m} or {24 * m}")

    def ramp(self, progress: Progress) -> float:
        """s(t) = clip(t / ramp_iters, 0, 1): the blind objective dominates early on."""
        ramp = iterations(self.ramp_iters, progress.total_iter, "model.ramp_iters")
        return 1.0 if ramp == 0 else min(max(progress.iteration / ramp, 0.0), 1.0)

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        noisy = self.prepare_input(batch["noisy"])
        n, _, h, w = noisy.shape
        if h % self.patch_multiple or w % self.patch_multiple:
            raise OptionsError(f"C-BSN patches must be divisible by both strides ({self.blind_stride} and 2); got "
                               f"{h}x{w} (datasets.train.crop_size)")
        x, _ = standardize(self.centred(noisy))
        s = self.blind_stride
        y_blind = batch_to_space(self.run("net", space_to_batch(x, s), blind=True), s)
        cells = draw_cell_indices(n, h, w, batch.get("seed")).to(x.device)
        with torch.no_grad():
            y_sub_blind = self.run("net", subsample(x, cells), blind=True)
        y_full = self.run("net", x, blind=False)
        loss_blind = self.losses["blind"](y_blind, x)
        loss_self = self.losses["self"](y_full, x)
        loss_inv = self.losses["invariance"](subsample(y_full, cells), y_sub_blind)
        weight = self.ramp(progress)
        loss = loss_blind + weight * (loss_self + self.invariance_weight * loss_inv)
        return {"loss": loss, "loss_blind": loss_blind.detach(), "loss_self": loss_self.detach(),
                "loss_inv": loss_inv.detach()}

    # -- inference: whole-image standardisation and padding, then plain non-blind passes (tileable)
    def box_mean(self, noisy: torch.Tensor) -> Optional[torch.Tensor]:
        return local_mean(noisy, self.centering_window) if self.centering == "local_mean" else None

    def centred(self, noisy: torch.Tensor) -> torch.Tensor:
        box = self.box_mean(noisy)
        return noisy if box is None else noisy - box

    def prepare(self, noisy: torch.Tensor):
        """Standardise with whole-image statistics and reflect-pad by ``inference_pad``; tiles of the
        result then only need an overlap of twice the receptive radius to be exact."""
        noisy = noisy.float()
        box = self.box_mean(noisy)
        x, (mean, std) = standardize(noisy if box is None else noisy - box)
        h, w = x.shape[-2:]
        p = self.inference_pad
        x = F.pad(x, (p, p, p, p), mode="reflect" if min(h, w) > p else "replicate")
        return x, (mean if box is None else mean + box, std, p)

    def finish(self, out: torch.Tensor, stats) -> torch.Tensor:
        mean, std, p = stats
        out = out[..., p:out.shape[-2] - p, p:out.shape[-1] - p]
        out = out * std.to(out.device) + mean.to(out.device)
        return out.clamp(0, 1) if self.clip_output else out

    @torch.no_grad()
    def denoise_tile(self, x: torch.Tensor) -> torch.Tensor:
        """One non-blind pass on a standardised, padded image (or a tile of one)."""
        x = self.prepare_input(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.run(self.inference_role, x, blind=False).float()
