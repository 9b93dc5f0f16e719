"""Small layers several network families share."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn


def same_conv(cin: int, cout: int, k: int = 1, dilation: int = 1,
              init: Optional[Callable[[nn.Conv2d], None]] = None) -> nn.Conv2d:
    """A k x k (dilated) conv that keeps the spatial size, initialised by ``init`` (the paper's)."""
    conv = nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)
    if init:
        init(conv)
    return conv
