"""D-BSN networks (Wu et al., ECCV 2020): the dilated blind-spot backbone and the sigma_mu and
noise-level (CNN_est) heads. Its distillation student, MWCNN, is in ``mwcnn.py``.

The backbone predicts the prior mean mu of each pixel from its neighbourhood only: each branch
starts with a centre-masked k x k conv and then only samples on a d-lattice (d = (k+1)/2), so an
offset o can reach the output only if o mod d != 0. Branch 1 (k=3, d=2) misses offsets with both
coordinates even, branch 2 (k=5, d=3) those with both multiples of 3; fused, the net ignores the
centre and the offsets = 0 mod 6. Module names follow the official ``state_dict`` keys (``dbsn_head``,
``br1.branch.6.inception_br1.2``, ``concat``, ``dbsn_tail`` ...), so official weights load as they are
once the ``module.`` prefix is dropped.
"""
from __future__ import annotations

import functools
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .common import same_conv


def _kaiming(module: nn.Module, keep_bias: bool = False) -> None:
    nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
    if not keep_bias:
        nn.init.zeros_(module.bias)


conv = functools.partial(same_conv, init=_kaiming)


class CentreMaskedConv2d(nn.Conv2d):
    """A k x k conv that never sees its centre tap: the weight is masked on every pass (the centre
    weights stay in the state dict, as in the official checkpoints, but get no gradient)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones(1, 1, k, k)
        mask[..., k // 2, k // 2] = 0
        self.register_buffer("centre_mask", mask, persistent=False)
        _kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.centre_mask, self.bias, padding=self.padding)


class InceptionBlock(nn.Module):
    """Three dilated paths (5x5, 3x3, 1x1) concatenated, fused back to the width with a residual,
    then two 1x1 convs. Every spatial tap is a multiple of the dilation, preserving the lattice."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        relu = nn.ReLU(inplace=True)
        self.inception_br1 = nn.Sequential(conv(width, width), relu, conv(width, width, 5, dilation), relu)
        self.inception_br2 = nn.Sequential(conv(width, width), relu, conv(width, width, 3, dilation), relu)
        self.inception_br3 = nn.Sequential(conv(width, width), relu)
        self.concat = conv(3 * width, width)
        self.middle_1x1_convs = nn.Sequential(conv(width, width), relu, conv(width, width), relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.inception_br1(x), self.inception_br2(x), self.inception_br3(x)], dim=1)
        return self.middle_1x1_convs(F.relu(self.concat(y), inplace=True) + x)


class BlindBranch(nn.Module):
    def __init__(self, width: int, mask_size: int, num_blocks: int):
        super().__init__()
        relu = nn.ReLU(inplace=True)
        dilation = (mask_size + 1) // 2
        layers = [CentreMaskedConv2d(width, width, mask_size), relu, conv(width, width), relu, conv(width, width), relu]
        layers += [InceptionBlock(width, dilation) for _ in range(num_blocks)]
        layers.append(conv(width, width))
        self.branch = nn.Sequential(*layers)
        self.receptive_radius = mask_size // 2 + num_blocks * 2 * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)


class DBSN(nn.Module):
    """``(mu, f) = net(y)``: the prior mean and the fused 96-channel feature that ``DBSNSigmaMu`` reads.

    Noisy input in [0, 1], never clipped; any H x W (no down-sampling).
    """

    input_multiple = 1

    def __init__(self, in_channels: int = 3, out_channels: Optional[int] = None, width: int = 96,
                 br1_mask_size: int = 3, br1_blocks: int = 8, br2_mask_size: int = 5, br2_blocks: int = 8):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        relu = nn.ReLU(inplace=True)
        self.dbsn_head = nn.Sequential(conv(in_channels, width), relu)
        self.br1 = BlindBranch(width, br1_mask_size, br1_blocks)
        self.br2 = BlindBranch(width, br2_mask_size, br2_blocks)
        self.concat = nn.Conv2d(2 * width, width, 1)
        _kaiming(self.concat, keep_bias=True)  # the official init keeps PyTorch's default bias here
        self.dbsn_tail = nn.Sequential(conv(width, width), relu, conv(width, width), relu, conv(width, out_channels))
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        self.receptive_radius = max(self.br1.receptive_radius, self.br2.receptive_radius)  # 50 by default

    def forward(self, y: torch.Tensor):
        x = self.dbsn_head(y)
        f = self.concat(torch.cat([self.br1(x), self.br2(x)], dim=1))
        return self.dbsn_tail(f), f


class DBSNSigmaMu(nn.Module):
    """Prior (co)variance head on the backbone feature f (so it inherits the blind spot). Raw output:
    1 value (gray std), 3 (colour diagonal) or 6 (upper triangle of a 3x3 factor, MG)."""

    input_multiple = 1

    def __init__(self, in_channels: int = 96, out_channels: int = 6, width: int = 32, layers: int = 3):
        super().__init__()
        mods = []
        for i in range(layers):
            last = i == layers - 1
            mods.append(conv(in_channels if i == 0 else width, out_channels if last else width))
            if not last:
                mods.append(nn.ReLU(inplace=True))
        self.conv = nn.Sequential(*mods)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv(f)


class DBSNSigmaN(nn.Module):
    """CNN_est, the noise-level network: five 1x1 convs. Raw output o; the model turns it into a
    std (softplus(o - 4) + 1e-3) or a covariance factor.

    ``variant`` keeps the two official versions: ``gray`` zero-initialises ``conv_final`` and adds
    3e-4 to the output; ``color`` keeps PyTorch's default init and replaces exact zeros with 1e-4.
    ``auto`` picks gray for one input channel.
    """

    input_multiple = 1

    def __init__(self, in_channels: int = 3, out_channels: int = 6, width: int = 32, layers: int = 5,
                 variant: Literal["auto", "gray", "color"] = "auto"):
        super().__init__()
        mods = []
        for i in range(layers - 1):
            mods += [conv(in_channels if i == 0 else width, width), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*mods)
        self.conv_final = nn.Conv2d(width, out_channels, 1)
        self.variant = ("gray" if in_channels == 1 else "color") if variant == "auto" else variant
        if self.variant == "gray":
            nn.init.zeros_(self.conv_final.weight)
            nn.init.zeros_(self.conv_final.bias)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.conv_final(self.conv(x))
        if self.variant == "gray":
            return o + 3e-4
        return torch.where(o == 0, torch.full_like(o, 1e-4), o)
