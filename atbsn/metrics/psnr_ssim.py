"""PSNR and MATLAB-style SSIM primitives (specs/metrics.md section 2).

Inputs are NumPy arrays; the protocols in ``protocols.py`` decide domain, clamping, rounding,
colour space and precision.
"""
from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, data_range: float, dtype=np.float64) -> float:
    """10 log10(L^2 / MSE) over every pixel and channel; +inf when the images are identical.

    ``dtype`` is the precision of the difference (two official codes use float32); the mean is
    always accumulated in float64.
    """
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    diff = a.astype(dtype) - b.astype(dtype)
    mse = float(np.mean(np.square(diff), dtype=np.float64))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    return np.outer(k, k)


def ssim_matlab(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of two single-channel images: 11x11 Gaussian (sigma 1.5), population moments,
    5-px "valid" crop, K1=0.01, K2=0.03 (Wang et al. 2004 as in BasicSR / N2N)."""
    import cv2

    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"SSIM needs two equal 2-D images, got {a.shape} and {b.shape}")
    if min(a.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    w = _gaussian_window()
    filt = lambda img: cv2.filter2D(img, -1, w)[5:-5, 5:-5]  # noqa: E731  (reflect-101 border)
    mu_a, mu_b = filt(a), filt(b)
    mu_a2, mu_b2, mu_ab = mu_a**2, mu_b**2, mu_a * mu_b
    var_a = filt(a * a) - mu_a2
    var_b = filt(b * b) - mu_b2
    cov = filt(a * b) - mu_ab
    ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a2 + mu_b2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim_per_channel(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean of the per-channel SSIMs of two HWC images."""
    return float(np.mean([ssim_matlab(a[:, :, c], b[:, :, c], data_range) for c in range(a.shape[2])]))


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img
