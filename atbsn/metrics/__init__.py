"""Metric protocols by name. ``build_metric('n2n_official')`` or ``build_metric({'type': 'basicsr', ...})``."""
from __future__ import annotations

from typing import Union

from ..registry import Registry
from .protocols import (
    ATBSNOfficial,
    BasicSR,
    BasicSRRGB,
    BasicSRY,
    CBSNFixedVal,
    CBSNOfficialVal,
    DBSNOfficial,
    MetricProtocol,
    N2NOfficial,
)
from .psnr_ssim import psnr, ssim_matlab, ssim_per_channel

METRIC_REGISTRY = Registry("metric protocol")
for _cls in (N2NOfficial, ATBSNOfficial, DBSNOfficial, BasicSR, BasicSRRGB, BasicSRY, CBSNFixedVal, CBSNOfficialVal):
    METRIC_REGISTRY.register(_cls, name=_cls.name)


def build_metric(cfg: Union[str, dict], where: str = "val.metrics") -> MetricProtocol:
    return METRIC_REGISTRY.build({"type": cfg} if isinstance(cfg, str) else cfg, where=where)


__all__ = ["METRIC_REGISTRY", "build_metric", "MetricProtocol", "psnr", "ssim_matlab", "ssim_per_channel"]
