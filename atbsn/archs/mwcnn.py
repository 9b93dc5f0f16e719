"""MWCNN (Liu et al., CVPR-W 2018), the student D-BSN distils into: Haar wavelet levels with plain
3x3 conv stacks; each level's up-path predicts a residual on that level's wavelet coefficients.

Layout, activations and ``state_dict`` keys are those of D-BSN's released gray MWCNN
(``level{1,2,3}_{prev,next}.block.*``, one shared ``DWT`` and ``IWT``), so its checkpoints load with
``strict=True`` and give the same outputs (``scripts/benchmark.py --official`` compares the two).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _orthogonal(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.orthogonal_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class HaarDWT(nn.Module):
    """One-level Haar transform of every channel, as a grouped stride-2 conv with four fixed 2x2
    filters; the outputs are interleaved per input channel ([c0: LL, LH, HL, HH, c1: ...]).
    ``inverse``: the transposed conv, which is the exact inverse (the filters are orthonormal).

    The filters are stored, not trained, rotated by 180 degrees as in the released checkpoint (it
    applies them as a true convolution); so LH and HL are the negated detail bands of a plain
    correlation, and LL the 2x2 sum / 2."""

    def __init__(self, inverse: bool = False):
        super().__init__()
        haar = 0.5 * torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [1.0, 1.0]],
                                   [[-1.0, 1.0], [-1.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]]])
        self.weight = nn.Parameter(haar.flip(-2, -1).unsqueeze(1), requires_grad=False)  # [4, 1, 2, 2]
        self.inverse = inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = int(x.shape[1]) // 4 if self.inverse else int(x.shape[1])  # static: a constant when traced
        w = self.weight.repeat(channels, 1, 1, 1)
        if self.inverse:
            return F.conv_transpose2d(x, w, stride=2, groups=channels)
        return F.conv2d(x, w, stride=2, groups=channels)


class ConvStack(nn.Module):
    """``layers`` 3x3 convs, ReLU after each (after the last only if ``last_relu``). The channel
    count changes at the first conv (``change_first``: the down-paths) or at the last (up-paths)."""

    def __init__(self, cin: int, cout: int, layers: int, change_first: bool, last_relu: bool = True):
        super().__init__()
        width = cout if change_first else cin
        sizes = [cin] + [width] * (layers - 1) + [cout]
        mods = []
        for i in range(layers):
            mods.append(_orthogonal(nn.Conv2d(sizes[i], sizes[i + 1], 3, padding=1)))
            if last_relu or i < layers - 1:
                mods.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MWCNN(nn.Module):
    """Multi-level wavelet CNN, D-BSN's distillation student.

    Three Haar levels with 4-layer 3x3 stacks of widths 160 / 256 / 256 on the way down
    (``level*_prev``) and up (``level*_next``). Each up-path's output is added to its level's
    wavelet coefficients (4C / 640 / 1024 channels) before the inverse transform; only the last one
    is linear. 16,145,892 trainable parameters for one channel; H and W must be multiples of 8 (the
    model pads).
    """

    input_multiple = 8

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (160, 256, 256), layers: int = 4):
        super().__init__()
        w1, w2, w3 = widths
        c = 4 * in_channels
        self.level1_prev = ConvStack(c, w1, layers, change_first=True)
        self.level1_next = ConvStack(w1, c, layers, change_first=False, last_relu=False)
        self.level2_prev = ConvStack(4 * w1, w2, layers, change_first=True)
        self.level2_next = ConvStack(w2, 4 * w1, layers, change_first=False)
        self.level3_prev = ConvStack(4 * w2, w3, layers, change_first=True)
        self.level3_next = ConvStack(w3, 4 * w2, layers, change_first=False)
        self.DWT, self.IWT = HaarDWT(), HaarDWT(inverse=True)
        self.in_channels = in_channels
        # 2 x layers 3x3 convs per level at scales 2, 4, 8, plus the Haar footprints: 119 by default
        self.receptive_radius = 2 * layers * (2 + 4 + 8) + 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.DWT(x)
        c2 = self.DWT(self.level1_prev(c1))
        c3 = self.DWT(self.level2_prev(c2))
        u2 = self.IWT(c3 + self.level3_next(self.level3_prev(c3)))
        u1 = self.IWT(c2 + self.level2_next(u2))
        return self.IWT(c1 + self.level1_next(u1))
