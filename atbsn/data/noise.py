"""Synthetic noise models for clean images in [0, 1] (never clipped, never quantised).

Strengths are given on the 0-255 scale, as papers state them (``sigma: 25`` means 25/255).
A scalar is fixed; a ``[low, high]`` pair draws one value per image, uniformly.
Every draw takes an explicit ``torch.Generator``, so training noise is fresh per visit and
validation noise is a pure function of (seed, image index).
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch

from ..errors import OptionsError
from ..registry import Registry

NOISE_REGISTRY = Registry("noise model")

Strength = Union[float, List[float]]


def _strength(value: Strength, name: str, where: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] <= value[1]:
        return float(value[0]), float(value[1])
    raise OptionsError(f"{where}.{name}: expected a number or [low, high] with low <= high, got {value!r}")


def _uniform(lo: float, hi: float, g: torch.Generator) -> float:
    if lo == hi:
        return lo
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


class NoiseModel:
    def __call__(self, clean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``clean`` is CHW float in [0,1]; returns the noisy CHW float image."""
        raise NotImplementedError


@NOISE_REGISTRY.register(name="gaussian")
class GaussianNoise(NoiseModel):
    """AWGN: y = x + sigma z."""

    def __init__(self, sigma: Strength):
        self.sigma = _strength(sigma, "sigma", "noise")

    def __call__(self, clean, g):
        sigma = _uniform(*self.sigma, g) / 255.0
        return clean + sigma * torch.randn(clean.shape, generator=g, dtype=clean.dtype)


@NOISE_REGISTRY.register(name="poisson")
class PoissonNoise(NoiseModel):
    """Shot noise: y = Poisson(lam x) / lam (values in multiples of 1/lam, may exceed 1)."""

    def __init__(self, lam: Strength):
        self.lam = _strength(lam, "lam", "noise")
        if self.lam[0] <= 0:
            raise OptionsError(f"noise.lam must be positive, got {lam!r}")

    def __call__(self, clean, g):
        lam = _uniform(*self.lam, g)
        return torch.poisson(clean.clamp_min(0) * lam, generator=g) / lam


@NOISE_REGISTRY.register(name="heteroscedastic_gaussian")
class HeteroscedasticGaussianNoise(NoiseModel):
    """Signal-dependent Gaussian (D-BSN's HG): y = x + sigma_s x z1 + sigma_c z2, z1 and z2 independent,
    so the per-pixel std is sqrt(sigma_s^2 x^2 + sigma_c^2)."""

    def __init__(self, sigma_s: Strength, sigma_c: Strength, same_z: bool = False):
        self.sigma_s = _strength(sigma_s, "sigma_s", "noise")
        self.sigma_c = _strength(sigma_c, "sigma_c", "noise")
        self.same_z = same_z  # official D-BSN validation/test bug: z1 = z2, std sigma_s x + sigma_c

    def __call__(self, clean, g):
        s = _uniform(*self.sigma_s, g) / 255.0
        c = _uniform(*self.sigma_c, g) / 255.0
        z1 = torch.randn(clean.shape, generator=g, dtype=clean.dtype)
        z2 = z1 if self.same_z else torch.randn(clean.shape, generator=g, dtype=clean.dtype)
        return clean + s * clean * z1 + c * z2


@NOISE_REGISTRY.register(name="multivariate_gaussian")
class MultivariateGaussianNoise(NoiseModel):
    """Cross-channel Gaussian: each pixel's RGB noise ~ N(0, Sigma).

    ``covariance`` is a fixed 3x3 matrix on the [0,1] scale. Without it, a fresh Sigma is drawn per
    image as D-BSN trains: Sigma = (scale/255)^2 |U^T diag(u) U|, u ~ U(0,1)^3, U orthonormal.
    """

    def __init__(self, covariance: Optional[List[List[float]]] = None, scale: float = 75.0):
        self.scale = scale
        self.chol = None
        if covariance is not None:
            cov = torch.tensor(covariance, dtype=torch.float64)
            if cov.shape != (3, 3) or not torch.allclose(cov, cov.T):
                raise OptionsError(f"noise.covariance must be a symmetric 3x3 matrix, got {covariance!r}")
            self.chol = self._cholesky(cov, "noise.covariance")

    @staticmethod
    def _cholesky(cov: torch.Tensor, where: str) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            eig = torch.linalg.eigvalsh(cov).tolist()
            raise OptionsError(f"{where} is not positive definite (eigenvalues {eig})")
        return chol

    def random_covariance(self, g: torch.Generator) -> torch.Tensor:
        while True:
            u = torch.rand(3, generator=g, dtype=torch.float64)
            basis, _ = torch.linalg.qr(torch.rand(3, 3, generator=g, dtype=torch.float64))
            cov = (self.scale / 255.0) ** 2 * (basis.T @ torch.diag(u) @ basis).abs()
            if int(torch.linalg.cholesky_ex(cov)[1]) == 0:  # |.| can break PSD: redraw
                return cov

    def __call__(self, clean, g):
        if clean.shape[0] != 3:
            raise OptionsError(f"multivariate_gaussian noise needs RGB images, got {clean.shape[0]} channel(s)")
        chol = self.chol if self.chol is not None else self._cholesky(self.random_covariance(g), "covariance")
        z = torch.randn((3, clean.shape[1] * clean.shape[2]), generator=g, dtype=torch.float64)
        return clean + (chol @ z).reshape(clean.shape).to(clean.dtype)


def build_noise(cfg: dict, where: str = "noise") -> NoiseModel:
    return NOISE_REGISTRY.build(cfg, where=where)
