"""Neighbor2Neighbor U-Net (Huang et al., CVPR 2021; the Laine et al. 2019 U-Net + three 1x1 convs).

State-dict keys match the official release, so ``model_*_b4e100r02.pth`` load with ``strict=True``.
"""
from __future__ import annotations


import torch
from torch import nn
import torch.nn.functional as F

from .atbsn import max_pool2x2


class UpsampleCat(nn.Module):
    """2x2 stride-2 transposed conv (with bias, no activation), then cat[upsampled, skip]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.deconv(x), skip], dim=1)


class N2NUNet(nn.Module):
    """U-Net of the official code: 5 max-pool levels, LeakyReLU(0.2) after every conv but ``nin_c``.

    The output stage (``dec_conv1*``, ``nin_a/b``) is 96 wide whatever ``n_feature`` is, as in the
    official code. H and W must be divisible by 32.
    """

    input_multiple = 32
    receptive_radius = 129  # measured by gradient support (tests/test_inference.py)

    def __init__(self, in_channels: int = 3, out_channels: int = 3, n_feature: int = 48, init_scale: float = 0.1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        nf, wide = n_feature, 96
        conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1)  # noqa: E731
        self.enc_conv0 = conv(in_channels, nf)
        for i in range(1, 7):
            setattr(self, f"enc_conv{i}", conv(nf, nf))
        self.up5 = UpsampleCat(nf, nf)
        self.dec_conv5a = conv(2 * nf, 2 * nf)
        self.dec_conv5b = conv(2 * nf, 2 * nf)
        for level in (4, 3, 2):
            setattr(self, f"up{level}", UpsampleCat(2 * nf, 2 * nf))
            setattr(self, f"dec_conv{level}a", conv(3 * nf, 2 * nf))
            setattr(self, f"dec_conv{level}b", conv(2 * nf, 2 * nf))
        self.up1 = UpsampleCat(2 * nf, 2 * nf)
        self.dec_conv1a = conv(2 * nf + in_channels, wide)
        self.dec_conv1b = conv(wide, wide)
        self.nin_a = nn.Conv2d(wide, wide, 1)
        self.nin_b = nn.Conv2d(wide, wide, 1)
        self.nin_c = nn.Conv2d(wide, out_channels, 1)
        self.reset_parameters(init_scale)

    def reset_parameters(self, scale: float = 0.1) -> None:
        """Kaiming-normal (a=0, fan_in) x ``scale`` (official: 0.1) with zero bias, on every conv and deconv.

        The official x0.1 makes the untrained output ~1e-6 and the first hundreds of iterations slow;
        ``init_scale: 1.0`` (plain He init) learns much faster in short runs such as the quick start.

        torch computes a ConvTranspose2d's fan_in from weight dim 1 (its output channels) x 2 x 2;
        ``kaiming_normal_`` does exactly that, as the official init does.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(scale)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2, inplace=True)  # noqa: E731  (every input is a fresh conv output)
        pool = max_pool2x2
        h = act(self.enc_conv0(x))
        skips = []
        for i in range(1, 5):
            h = pool(act(getattr(self, f"enc_conv{i}")(h)))
            skips.append(h)
        h = pool(act(self.enc_conv5(h)))
        h = act(self.enc_conv6(h))
        for level, skip in zip((5, 4, 3, 2), reversed(skips)):
            h = getattr(self, f"up{level}")(h, skip)
            h = act(getattr(self, f"dec_conv{level}a")(h))
            h = act(getattr(self, f"dec_conv{level}b")(h))
        h = self.up1(h, x)
        h = act(self.dec_conv1a(h))
        h = act(self.dec_conv1b(h))
        h = act(self.nin_a(h))
        h = act(self.nin_b(h))
        return self.nin_c(h)
