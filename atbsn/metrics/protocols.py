"""Metric protocols by name (specs/metrics.md section 3).

Each protocol takes the prediction and the reference as float HWC arrays on the [0, 1] scale
(the reference usually being an 8-bit image / 255) and returns ``{'psnr': ..., 'ssim': ...}``.
``describe()`` records the exact conventions next to every reported number.
"""
from __future__ import annotations

from typing import Dict, Literal

import numpy as np

from ..utils.image import quantize, rgb_to_y
from .psnr_ssim import crop_border, psnr, ssim_matlab, ssim_per_channel


class MetricProtocol:
    name = "protocol"
    conventions: Dict[str, str] = {}

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
        raise NotImplementedError

    def describe(self) -> Dict[str, str]:
        return {"protocol": self.name, **self.conventions}


def _luma(img_0_255: np.ndarray, channel_order: str) -> np.ndarray:
    return img_0_255[:, :, 0].astype(np.float64) if img_0_255.shape[2] == 1 else rgb_to_y(img_0_255, channel_order)


class N2NOfficial(MetricProtocol):
    """Neighbor2Neighbor validation: clamp, round half up to uint8, RGB PSNR in float32,
    per-channel MATLAB SSIM on float64 copies of the uint8 images."""

    name = "n2n_official"
    conventions = {
        "output": "clamp [0,1] -> uint8(floor(255p + 0.5))",
        "psnr": "all channels jointly on uint8 values, float32, L=255",
        "ssim": "MATLAB-style 11x11 Gaussian sigma 1.5, per RGB channel, averaged",
    }

    def __call__(self, pred, gt):
        p = quantize(pred, 8, "half_up").astype(np.float32)
        g = quantize(gt, 8, "half_even").astype(np.float32)
        return {"psnr": psnr(g, p, 255.0, dtype=np.float32), "ssim": ssim_per_channel(g.astype(np.float64), p.astype(np.float64))}


class ATBSNOfficial(MetricProtocol):
    """AT-BSN validation: no clamping or rounding; PSNR on [0,1] floats, SSIM on the Y channel."""

    name = "atbsn_official"

    def __init__(self, channel_order: Literal["rgb", "bgr"] = "rgb"):
        # Checked against the reference vectors: the official values use the RGB coefficients.
        self.channel_order = channel_order
        self.conventions = {
            "output": "unclamped, unrounded float",
            "psnr": "all channels jointly, float32 difference, data_range 1",
            "ssim": f"MATLAB-style on BT.601 Y (+16, unrounded), coefficients applied as {channel_order.upper()}",
        }

    def __call__(self, pred, gt):
        p = pred.astype(np.float32)
        g = gt.astype(np.float32)
        yp = _luma(p.astype(np.float64) * 255.0, self.channel_order)
        yg = _luma(g.astype(np.float64) * 255.0, self.channel_order)
        return {"psnr": psnr(g, p, 1.0, dtype=np.float32), "ssim": ssim_matlab(yg, yp)}


class DBSNOfficial(MetricProtocol):
    """D-BSN: clamp to [0,1], no quantisation, float32 PSNR with data_range 1; no SSIM."""

    name = "dbsn_official"
    conventions = {"output": "clamp [0,1], no rounding", "psnr": "float32, data_range 1, all channels"}

    def __call__(self, pred, gt):
        return {"psnr": psnr(gt.astype(np.float32), np.clip(pred, 0, 1).astype(np.float32), 1.0, dtype=np.float32)}


class BasicSR(MetricProtocol):
    """BasicSR ``calculate_psnr`` / ``calculate_ssim``: clamp, NumPy round to uint8, then
    RGB (or Y) PSNR and MATLAB SSIM, with an optional ``crop_border``."""

    name = "basicsr"

    def __init__(self, crop_border: int = 0, test_y_channel: bool = False, channel_order: Literal["rgb", "bgr"] = "rgb"):
        self.crop, self.y, self.channel_order = crop_border, test_y_channel, channel_order
        space = f"Y (BT.601, unrounded, {channel_order.upper()} order)" if test_y_channel else "RGB jointly / per channel"
        self.conventions = {
            "output": "clamp [0,1] -> uint8(round half to even)",
            "psnr": f"{space}, float64, L=255",
            "ssim": f"MATLAB-style 11x11 Gaussian sigma 1.5 on {space}",
            "crop_border": str(crop_border),
        }

    def __call__(self, pred, gt):
        p = quantize(pred, 8, "half_even").astype(np.float64)
        g = quantize(gt, 8, "half_even").astype(np.float64)
        p, g = crop_border(p, self.crop), crop_border(g, self.crop)
        if self.y:
            yp, yg = _luma(p, self.channel_order), _luma(g, self.channel_order)
            return {"psnr": psnr(yg, yp, 255.0), "ssim": ssim_matlab(yg, yp)}
        return {"psnr": psnr(g, p, 255.0), "ssim": ssim_per_channel(g, p)}


class BasicSRRGB(BasicSR):
    """The framework's default report (``crop_border: 0``, ``test_y_channel: false``)."""

    name = "basicsr_rgb"

    def __init__(self):
        super().__init__(0, False)


class BasicSRY(BasicSR):
    name = "basicsr_y"

    def __init__(self, channel_order: Literal["rgb", "bgr"] = "rgb"):
        super().__init__(0, True, channel_order)


class CBSNFixedVal(MetricProtocol):
    """C-BSN validation with the wrap-around bug fixed: clip, round, uint8 RGB PSNR."""

    name = "cbsn_fixed_val"
    conventions = {"output": "clip [0,1] -> uint8(round half to even)", "psnr": "uint8 RGB, L=255"}

    def __call__(self, pred, gt):
        p = quantize(pred, 8, "half_even")
        g = quantize(gt, 8, "half_even")
        return {"psnr": psnr(g, p, 255.0)}


class CBSNOfficialVal(MetricProtocol):
    """C-BSN's in-training validation as released: round(255x) cast to uint8 without clipping
    (out-of-range values wrap around). Only for comparing with the official logs."""

    name = "cbsn_official_val"
    conventions = {"output": "uint8(round(255p)) without clipping (wraps: official bug)", "psnr": "uint8 RGB, L=255"}

    def __call__(self, pred, gt):
        p = quantize(pred, 8, "half_even", clip=False)
        g = quantize(gt, 8, "half_even")
        return {"psnr": psnr(g, p, 255.0)}
