"""MWCNN (Liu et al., CVPR-W 2018), the student D-BSN distils into: Haar wavelet levels with plain
3x3 conv stacks, residual on each level's coefficients."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .dbsn import conv

class HaarDWT(nn.Module):
    """One-level Haar transform as a grouped stride-2 conv; outputs interleaved per input channel
    ([c0: LL, LH, HL, HH, c1: ...]). The filters are fixed (stored, not trained)."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        f = 0.5 * torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [1.0, 1.0]],
                                [[-1.0, 1.0], [-1.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]]])
        self.weight = nn.Parameter(f.unsqueeze(1), requires_grad=False)  # [4, 1, 2, 2]
        self.channels, self.inverse = channels, inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.repeat(self.channels, 1, 1, 1)
        if self.inverse:  # orthonormal filters: the transposed conv is the exact inverse
            return F.conv_transpose2d(x, w, stride=2, groups=self.channels)
        return F.conv2d(x, w, stride=2, groups=self.channels)


def _stack(cin: int, width: int, cout: int, layers: int, last_linear: bool) -> nn.Sequential:
    mods = []
    for i in range(layers):
        out = cout if i == layers - 1 else width
        mods += [conv(cin if i == 0 else width, out, 3)]
        if not (last_linear and i == layers - 1):
            mods.append(nn.ReLU(inplace=True))
    for m in mods:
        if isinstance(m, nn.Conv2d):
            nn.init.orthogonal_(m.weight)
    return nn.Sequential(*mods)


class MWCNN(nn.Module):
    """Multi-level wavelet CNN (Liu et al. 2018), D-BSN's distillation student.

    Three Haar levels with 4-layer 3x3 stacks of widths 160 / 256 / 256 (8 layers at the bottom);
    each level's up-path predicts a residual on that level's wavelet coefficients (4C / 640 / 1024
    channels) before the inverse transform. 16,145,892 trainable parameters for one channel; H and W
    must be multiples of 8 (the model pads).
    """

    input_multiple = 8

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (160, 256, 256), layers: int = 4):
        super().__init__()
        w1, w2, w3 = widths
        c = in_channels
        self.dwt1, self.iwt1 = HaarDWT(c), HaarDWT(c, inverse=True)
        self.dwt2, self.iwt2 = HaarDWT(w1), HaarDWT(w1, inverse=True)
        self.dwt3, self.iwt3 = HaarDWT(w2), HaarDWT(w2, inverse=True)
        self.down1 = _stack(4 * c, w1, w1, layers, False)
        self.down2 = _stack(4 * w1, w2, w2, layers, False)
        self.bottom = _stack(4 * w2, w3, 4 * w2, 2 * layers, True)
        self.up2 = _stack(w2, w2, 4 * w1, layers, True)
        self.up1 = _stack(w1, w1, 4 * c, layers, True)
        self.in_channels = in_channels
        # 2 x layers 3x3 convs per level at scales 2, 4, 8, plus the Haar footprints: 119 by default
        self.receptive_radius = 2 * layers * (2 + 4 + 8) + 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.dwt1(x)
        d1 = self.down1(c1)
        c2 = self.dwt2(d1)
        d2 = self.down2(c2)
        c3 = self.dwt3(d2)
        u2 = self.iwt3(self.bottom(c3) + c3) + d2
        u1 = self.iwt2(self.up2(u2) + c2) + d1
        return self.iwt1(self.up1(u1) + c1)
