"""Parameter and multiply-accumulate counts of a network, by forward hooks on its layers.

MACs count convolutions, transposed convolutions and linear layers (the specs' convention);
activations, pooling and additions are not counted. A conv whose module drops some output rows
(``dropped_rows``, e.g. AT-BSN's blind conv: padding in the conv, then a slice) counts only the
rows it delivers, so the count is the network's and does not depend on how a shift is implemented.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, inputs: torch.Tensor, forward: Optional[Callable] = None) -> int:
    """Total MACs of one forward pass on ``inputs`` (``forward(net, x)`` if given)."""
    total = [0]

    def conv_hook(m: nn.Conv2d, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        rows = out.shape[-2]
        kept = (rows - getattr(m, "dropped_rows", 0)) / rows
        total[0] += round(out.numel() * kept) * (m.in_channels // m.groups) * k

    def deconv_hook(m: nn.ConvTranspose2d, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += inp[0].numel() * (m.out_channels // m.groups) * k

    def linear_hook(m: nn.Linear, inp, out):
        total[0] += out.numel() * m.in_features

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    from ..archs.atbsn import official_ops

    try:
        with torch.no_grad(), official_ops():
            (forward or (lambda n, x: n(x)))(net, inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def macs_per_pixel(net: nn.Module, channels: int = 3, size: int = 256, forward: Optional[Callable] = None) -> float:
    x = torch.rand(1, channels, size, size)
    return count_macs(net, x, forward) / (size * size)
