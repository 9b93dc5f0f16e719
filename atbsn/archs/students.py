"""AT-BSN's non-blind students (distillation targets), official key names.

* C (``ATBSNStudentC``, "N_BSN", the paper's AT-BSN (D)): the teacher's U-Net in plain mode.
* A (``ATBSNStudentA``, "small") and B (``ATBSNStudentB``, "small2"): shallow U-Nets without bias,
  replicate-padded convs, any input size ("smart" centred padding of the upsampled maps).
All three end with LeakyReLU(0.1) on the 3-channel output, as the official models do.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .atbsn import SLOPE, BlindUNet, init_kaiming, max_pool2x2, official_graph, pad_bottom_right, upsample, upsample_cat
from .polyphase import phase_weight, replicate_conv3x3, upsampled_weight


class ATBSNStudentC(nn.Module):
    """The plain U-Net (1,003,011 parameters); other sizes are padded bottom/right to multiples of 32."""

    input_multiple = 32
    receptive_radius = 129

    def __init__(self, in_channels: int = 3, mid_channels: int = 48, out_channels: int = 3, bias: bool = True,
                 pad_mode: Literal["reflect", "replicate", "zero"] = "reflect"):
        super().__init__()
        self.in_channels, self.out_channels, self.pad_mode = in_channels, out_channels, pad_mode
        self.unet = BlindUNet(in_channels, mid_channels, out_channels, blind=False, bias=bias)
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            return self.unet(pad_bottom_right(x, 32, self.pad_mode))[..., :h, :w]
        return self.unet(x)


class ReplicateConv(nn.Module):
    """3x3 conv without bias, replicate padding, then LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="replicate", bias=False)

    def forward(self, x):
        if official_graph():
            return F.leaky_relu(self.conv(x), SLOPE)
        return F.leaky_relu_(replicate_conv3x3(x, self.conv.weight), SLOPE)


class Stage(nn.Module):
    """A chain of ReplicateConvs named conv1..convN (student B); student A names its single conv ``conv``."""

    def __init__(self, widths, single_name: bool = False):
        super().__init__()
        pairs = list(zip(widths[:-1], widths[1:]))
        if single_name:
            self.conv = ReplicateConv(*pairs[0])
        else:
            for i, (cin, cout) in enumerate(pairs, 1):
                setattr(self, f"conv{i}", ReplicateConv(cin, cout))

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


def upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest x2, then zero-pad (centred) to ``like``'s size when pooling floored an odd side."""
    x = upsample(x)
    dy, dx = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
    if dy or dx or torch.jit.is_tracing():  # traced (ONNX export): the pad stays in, sized by the input
        x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
    return x


class SmallStudent(nn.Module):
    """enc1 -> pool -> enc2 -> pool -> enc3 -> up + cat enc1 -> dec2 -> up + cat input -> dec1."""

    tile_alignment = 4  # two 2x2 poolings: tiles must start on the same pooling phase

    def __init__(self, enc1, enc2, enc3, dec2, dec1, single_name: bool):
        super().__init__()
        self.in_channels = enc1[0]
        self.out_channels = dec1[-1]
        self.enc1, self.enc2, self.enc3 = (Stage(w, single_name) for w in (enc1, enc2, enc3))
        self.dec2, self.dec1 = Stage(dec2, single_name), Stage(dec1, single_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lean = not official_graph() and x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        if lean and len(self.dec1._modules) == 1:
            return self._forward_half_resolution(x)
        cat = upsample_cat if lean else lambda h, skip: torch.cat([upsample_to(h, skip), skip], 1)
        x1 = max_pool2x2(self.enc1(x))
        h = self.enc3(max_pool2x2(self.enc2(x1)))
        h = self.dec2(cat(h, x1))
        return self.dec1(cat(h, x))

    def _forward_half_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """Student A at inference: its last conv (99 -> 3 channels at full resolution, after the
        last upsampling) runs at half resolution (:mod:`.polyphase`): the upsampled map's share as
        one 96 -> 12 conv before the upsampling, the input's share as a 12 -> 12 conv of its four
        pixel phases. The same function as :meth:`forward`."""
        x_part, up_part = self._folded_weights()
        x1 = max_pool2x2(self.enc1(x))
        h = self.enc3(max_pool2x2(self.enc2(x1)))
        h = self.dec2(upsample_cat(h, x1))
        out = replicate_conv3x3(h, up_part)
        out += F.conv2d(F.pixel_unshuffle(F.pad(x, (2, 2, 2, 2), mode="replicate"), 2), x_part)
        return F.leaky_relu_(F.pixel_shuffle(out, 2), SLOPE)

    def _folded_weights(self):
        """dec1's conv split into its input's share (phase outputs, in pixel_shuffle's order) and
        its upsampled share; recomputed when the weights change."""
        w = self.dec1.conv.conv.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if getattr(self, "_folded_key", None) != key:
            c_up, o = w.shape[1] - self.in_channels, w.shape[0]
            x_part = phase_weight(w[:, c_up:]).unflatten(0, (4, o)).transpose(0, 1).flatten(0, 1)
            self._folded = (x_part, upsampled_weight(w[:, :c_up]))
            self._folded_key = key
        return self._folded


class ATBSNStudentA(SmallStudent):
    """Student A, "Blind_UNet_small": 128,385 parameters, 31,185 MACs per pixel."""

    receptive_radius = 13

    def __init__(self, in_channels: int = 3, out_channels: int = 3):
        super().__init__((in_channels, 48), (48, 48), (48, 48), (96, 96), (96 + in_channels, out_channels), True)


class ATBSNStudentB(SmallStudent):
    """Student B, "Blind_UNet_small2": 856,656 parameters, 405,648 MACs per pixel."""

    receptive_radius = 36

    def __init__(self, in_channels: int = 3, out_channels: int = 3):
        super().__init__((in_channels, 48, 48, 48), (48, 48, 48, 48), (48, 96, 96, 48), (96, 96, 96, 96, 96),
                         (96 + in_channels, 96, 96, 96, out_channels), False)
