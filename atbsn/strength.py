"""Denoising strength that follows the noise of each photo, estimated from the noisy photo alone.

A denoiser that removes the same amount everywhere erases texture where the noise is mild. Here a
denoiser's change ``d - x`` is kept only as far as the image's own noise explains it:

* **Noise level.** ``noise_variance`` predicts every pixel from the ring of pixels at distance
  ``ring`` (so the prediction does not see the pixel's own noise, nor noise correlated over fewer
  pixels). In flat regions the residual's energy is the noise variance; texture only adds to it.
  So, per brightness bin (camera noise depends on the signal), a low quantile of 8x8-block
  residual energies estimates the noise variance sigma^2(I), looked up per pixel; bins that
  texture covers are capped by their neighbours (``smooth_levels``).
* **Strength.** ``adaptive_blend`` keeps ``x + w (d - x)`` with ``w = min(1, sigma^2 / D)``, D the
  local mean of ``|d - x|^2``. For a prediction d that does not see the pixel's noise,
  ``E|d - x|^2 = E|d - y|^2 + sigma^2``, and this w is the Wiener shrinkage between d and x (the
  posterior mean of a blind-spot prediction and the noisy pixel). A denoiser that stays within the
  noise (D <= sigma^2) is left as it is; one that removes texture (D > sigma^2) is pulled back
  toward the input where it does.
* **Mild and heavy noise.** The shrinkage pays where the noise is mild (texture is then the larger
  term); under heavy noise the estimated sigma^2 is biased low (the noise is correlated over more
  than the ring) and the shrinkage only leaves noise in. So it fades out between ``mild_sigma`` and
  ``heavy_sigma`` (8-bit levels; full change above). Under mild noise the result is also averaged
  with NL-means at ``h = nlm_strength * sigma`` (``classical_mix``): the blind-spot student erases
  fine texture where NL-means leaves patch artefacts, and their mean beats both
  (benchmarks/real_noise/adaptive.md). With ``wiener_refine`` the classical half is itself the mean
  of NL-means and ``transform_wiener`` piloted by it (BM3D's second step without block matching):
  three estimates that err in different places.
* **Gain estimate.** For the Wiener shrinkage the error is orthogonal to the change:
  ``E|out - y|^2 = sigma^2 - E|out - x|^2``, so the gain over the input is estimated, with no clean
  image, as ``10 log10(sum sigma^2 / sum (sigma^2 - |out - x|^2))`` (at most 13 dB). It is the
  network half's gain: the NL-means average measured above it on every test image.
  ``val.strength.min_gain_db`` returns the input unchanged when the estimate says denoising does
  not help; so does an image with no measurable noise (``NOISELESS_SIGMA``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import math

import torch
import torch.nn.functional as F


@dataclass
class StrengthReport:
    """What the adaptive strength measured on one image (8-bit levels, dB)."""

    noise_sigma: float  # estimated noise standard deviation, 0-255 scale
    changed_rms: float  # RMS of out - x, 0-255 scale
    mean_strength: float  # mean of the per-pixel w in [0, 1]
    estimated_gain_db: float  # estimated PSNR gain of the output over the noisy input
    kept_input: bool  # True when the estimate said denoising does not help
    heaviness: float = 0.0  # 0 mild ... 1 heavy noise (full strength), from noise_sigma
    classical_mix: float = 0.0  # weight of NL-means in the output


def _box_sum(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over every ``size`` x ``size`` window (valid positions), as ``size`` shifted adds along
    the rows, then along the columns: memory-bound passes, 2.5-3x faster here than avg_pool2d,
    which sums the whole window at every pixel."""
    h, w = x.shape[-2] - size + 1, x.shape[-1] - size + 1
    rows = x[..., :, 0:w].clone()
    for i in range(1, size):
        rows.add_(x[..., :, i:i + w])
    out = rows[..., 0:h, :].clone()
    for i in range(1, size):
        out.add_(rows[..., i:i + h, :])
    return out


def _ring_mean(x: torch.Tensor, radius: int, padded: bool = False) -> torch.Tensor:
    """Mean of the pixels at Chebyshev distance exactly ``radius`` (reflect-padded), per channel:
    the outer box's sum less the inner one's (a grouped 5x5 conv here took 0.8 GB of im2col on 12 MP).
    ``padded``: ``x`` already carries ``radius`` pixels of padding on every side (a strip)."""
    if radius < 1:
        return x.clone()
    xp = x if padded else F.pad(x, (radius,) * 4, mode="reflect")
    outer, inner = 2 * radius + 1, 2 * radius - 1
    ring = _box_sum(xp, outer)
    ring.sub_(_box_sum(xp[..., 1:-1, 1:-1], inner))
    return ring.div_(outer ** 2 - inner ** 2)


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size`` x ``size`` window (reflect-padded), same shape as ``x``."""
    r = size // 2
    return _window_mean(F.pad(x, (r, size - 1 - r, r, size - 1 - r), mode="reflect"), size)


def _window_mean(xp: torch.Tensor, size: int, rows: int = 64) -> torch.Tensor:
    """Mean of every ``size`` x ``size`` window (valid positions), summed window row by window row,
    left to right, as ``avg_pool2d(xp, size, stride=1)`` sums on a CPU, so it equals it bit for bit:
    the noise estimate bins blocks by this brightness, and one rounding change moves blocks with
    tied brightness across bin edges (1% in one CC15 estimate). Shifted adds over strips of
    ``rows`` output rows that stay in cache: 0.17 s against avg_pool2d's 0.42 for 8x8 on 12 MP."""
    h, w = xp.shape[-2] - size + 1, xp.shape[-1] - size + 1
    out = xp.new_empty(*xp.shape[:-2], h, w)
    for r0 in range(0, h, rows):
        part = xp[..., r0:min(h, r0 + rows) + size - 1, :]
        n = part.shape[-2] - size + 1
        acc = out[..., r0:r0 + n, :]
        acc.copy_(part[..., 0:n, 0:w])
        for i in range(size):
            for j in range(size):
                if i or j:
                    acc.add_(part[..., i:i + n, j:j + w])
    return out.div_(size * size)


# A block whose ring residual is this small is exactly flat: clipped highlights or shadows, borders,
# graphics. It says nothing of the noise elsewhere (a clipped sky is 12% of Kodak's kodim20, and
# counted, it took that photo's estimate to 0).
FLAT_BLOCK_ENERGY = 1e-9  # (0.008 levels)^2; one pixel off by 1 level in an 8x8 block gives ~1e-7
NOISELESS_SIGMA = 0.1  # 8-bit levels: below it nothing is taken out (a clean render, a graphic) and the input is kept
STRIP_ROWS = 128  # the noise estimate's row strips: its temporaries stay a few MB (full-size ones were 2 s of page faults per 12 MP)


def noise_variance(x: torch.Tensor, ring: int = 2, block: int = 8, quantile: float = 0.2,
                   bins: int = 8) -> torch.Tensor:
    """Per-pixel noise variance (per channel) of a noisy N x C x H x W image in [0, 1], as N x 1 x H x W.

    The ring residual of white noise has variance sigma^2 (1 + 1/n_ring); that factor is removed.
    Blocks are binned by brightness into ``bins`` groups of equal count; each group's
    ``quantile`` of block energies is its sigma^2, interpolated linearly in brightness. Exactly
    flat blocks (``FLAT_BLOCK_ENERGY``) are left out; an image with no other block has sigma 0.
    """
    if min(x.shape[-2:]) <= 2 * ring:
        raise ValueError(f"an image of {tuple(x.shape[-2:])} px is too small to estimate its noise level")
    x = x.float()
    h = x.shape[-2]
    b = min(block, *x.shape[-2:])
    brightness = x.new_empty(x.shape[0], 1, *x.shape[-2:])
    block_energy, block_level = [], []
    strip = b * max(1, STRIP_ROWS // b)  # whole blocks per strip: the block means are the whole image's
    r = block // 2  # box_mean's reflect padding: r rows before, block - 1 - r after
    for r0 in range(0, h, strip):
        r1 = min(h, r0 + strip)
        # the ring residual's energy, channel by channel, from rows with their (reflected) margins
        energy = torch.zeros_like(x[:, :1, r0:r1])
        for c in range(x.shape[1]):
            xp = _padded_rows(x[:, c:c + 1], r0, r1 + 2 * ring, ring, "reflect")
            energy.add_(_ring_mean(xp, ring, padded=True).sub_(x[:, c:c + 1, r0:r1]).square_())
        energy.div_(x.shape[1] * (1 + 1 / (8 * ring)))
        # brightness: box_mean of the channel mean, its rows' reflect padding taken by index
        rows = _reflected(torch.arange(r0 - r, r1 + block - 1 - r), h)
        mean = x.index_select(-2, rows).mean(1, keepdim=True)
        brightness[..., r0:r1, :] = _window_mean(F.pad(mean, (r, block - 1 - r, 0, 0), mode="reflect"), block)
        if r1 - r0 >= b:  # a last strip shorter than a block: the whole image's pooling drops those rows too
            block_energy.append(F.avg_pool2d(energy, b))
            block_level.append(F.avg_pool2d(brightness[..., r0:r1, :], b))
    block_energy, block_level = torch.cat(block_energy, -2), torch.cat(block_level, -2)
    out = torch.empty_like(brightness)
    for i in range(x.shape[0]):
        e, lv = block_energy[i].flatten(), block_level[i].flatten()
        textured = e > FLAT_BLOCK_ENERGY
        if not bool(textured.any()):
            out[i] = 0.0
            continue
        e, lv = e[textured], lv[textured]
        order = torch.argsort(lv)
        groups = [g for g in torch.tensor_split(order, min(bins, len(order))) if len(g)]
        centers = torch.stack([lv[g].median() for g in groups])
        levels = torch.stack([torch.quantile(e[g], quantile) for g in groups])
        smoothed = smooth_levels(levels, torch.quantile(e, quantile))
        for r0 in range(0, out.shape[-2], 256):  # in row strips: _interp's index and weight maps stay small
            out[i, :, r0:r0 + 256] = _interp(brightness[i, :, r0:r0 + 256], centers, smoothed)
    return out


def smooth_levels(levels: torch.Tensor, overall: torch.Tensor, step: float = 2.0, span: float = 8.0) -> torch.Tensor:
    """A brightness bin covered by texture (fabric, foliage) reads far above the noise. Camera noise
    changes smoothly with brightness, so each bin is capped at ``step`` times its neighbour's level
    (applied both ways) and at ``span`` times the image-wide quantile, the level of its flattest
    blocks wherever they are. Caps only lower the estimate: the safe direction."""
    out = torch.minimum(levels, overall * span)
    for i in range(1, len(out)):
        out[i] = torch.minimum(out[i], out[i - 1] * step)
    for i in range(len(out) - 2, -1, -1):
        out[i] = torch.minimum(out[i], out[i + 1] * step)
    return out


def _interp(v: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` for torch: piecewise linear, constant beyond the ends."""
    if len(xp) == 1:
        return torch.full_like(v, float(fp[0]))
    idx = torch.searchsorted(xp.contiguous(), v.contiguous().clamp(xp[0], xp[-1])).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    t = ((v.clamp(xp[0], xp[-1]) - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def heaviness(sigma_8bit: float, mild_sigma: float, heavy_sigma: float) -> float:
    """0 at or below ``mild_sigma``, 1 at or above ``heavy_sigma`` (8-bit levels), linear between."""
    if heavy_sigma <= mild_sigma:
        return float(sigma_8bit >= heavy_sigma)
    return min(1.0, max(0.0, (sigma_8bit - mild_sigma) / (heavy_sigma - mild_sigma)))


def nl_means(noisy: torch.Tensor, h: float) -> torch.Tensor:
    """OpenCV's NL-means (7 px patches, 21 px search) of one C x H x W image in [0, 1], at filter
    strength ``h`` in 8-bit levels; it works on 8-bit images, so the input is rounded to 8 bits.

    Colour images are filtered as CIELAB lightness and chroma (two passes at ``h``), converted from
    *sRGB*: ``cv2.fastNlMeansDenoisingColored`` converts as if the 8-bit values were linear light
    (``COLOR_LBGR2Lab``), which bends a photo's gamma-encoded values and noise a second time, so no
    one ``h`` fits its shadows and highlights. Same cost; in the recipe +0.11 dB on cc15_mild, +0.19
    on CC15, -0.02 on SIDD_samples (benchmarks/real_noise/adaptive.md)."""
    import cv2
    import numpy as np

    img = np.round(noisy.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    h = max(float(h), 0.5)
    if img.shape[2] == 3:
        lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB)
        lightness = cv2.fastNlMeansDenoising(np.ascontiguousarray(lab[:, :, 0]), None, h, 7, 21)
        chroma = cv2.fastNlMeansDenoising(np.ascontiguousarray(lab[:, :, 1:]), None, h, 7, 21)
        out = cv2.cvtColor(np.dstack([lightness, chroma]), cv2.COLOR_LAB2RGB)
    else:
        out = cv2.fastNlMeansDenoising(np.ascontiguousarray(img[:, :, 0]), None, h, 7, 21)[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float().div_(255)


# Orthonormal opponent colour transform (BM3D's): luma and two chroma axes, so the noise variance
# keeps its scale and chroma noise, weaker in camera output, is filtered on its own level.
OPPONENT = torch.tensor([[1 / math.sqrt(3)] * 3,
                         [1 / math.sqrt(2), 0, -1 / math.sqrt(2)],
                         [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)]])


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II, ``c[k, i]``."""
    i = torch.arange(n, dtype=torch.float64)
    c = torch.cos(math.pi * (2 * i[None] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c.float()


def _patch_dct(x: torch.Tensor, c: torch.Tensor, stride: int) -> torch.Tensor:
    """1 x 1 x h x w -> 1 x n^2 x h' x w': the 2-D DCT of every n x n patch at ``stride``, separably
    (n + n^2/stride multiply-adds per pixel and coefficient row instead of n^2)."""
    n = c.shape[0]
    rows = F.conv2d(x, c.view(n, 1, 1, n), stride=(1, stride))
    return F.conv2d(rows, c.view(n, 1, n, 1).repeat(n, 1, 1, 1), stride=(stride, 1), groups=n)


def _patch_idct(coef: torch.Tensor, c: torch.Tensor, stride: int) -> torch.Tensor:
    """The adjoint of :func:`_patch_dct`: every patch's inverse DCT added into place."""
    n = c.shape[0]
    cols = F.conv_transpose2d(coef, c.view(n, 1, n, 1).repeat(n, 1, 1, 1), stride=(stride, 1), groups=n)
    return F.conv_transpose2d(cols, c.view(n, 1, 1, n), stride=(1, stride))


def _reflected(rows: torch.Tensor, h: int) -> torch.Tensor:
    """Row indices, those outside ``0..h-1`` reflected back in (``F.pad``'s reflect)."""
    return rows.abs().where(rows < h, 2 * (h - 1) - rows)


def _padded_rows(x: torch.Tensor, start: int, stop: int, pad: int, mode: str) -> torch.Tensor:
    """Rows ``start:stop`` of ``F.pad(x, (pad,) * 4, mode)`` (reflect or replicate), without padding
    all of ``x``: a 12-MP channel's padded copies were most of the filter's memory."""
    h = x.shape[-2]
    rows = torch.arange(start - pad, stop - pad)
    rows = _reflected(rows, h) if mode == "reflect" else rows.clamp(0, h - 1)
    return F.pad(x.index_select(-2, rows), (pad, pad, 0, 0), mode=mode)


PATCHES_PER_CHUNK = 20000  # the Wiener filter's chunks of patch rows: 16 rows of a 4000-px photo, 5 MB per 64 coefficients


def _wiener_channel(noisy: torch.Tensor, pilot: torch.Tensor, sigma2: torch.Tensor, n: int, stride: int,
                    rows_per_chunk: Optional[int] = None) -> torch.Tensor:
    """One channel (1 x 1 x H x W each). Every n x n patch's DCT coefficients Y of the noisy image
    are scaled by ``P^2 / (P^2 + sigma^2)``, P the pilot's; overlapping patches are averaged with
    BM3D's weights ``1 / (sigma^2 sum g^2)``. Chunks of patch rows keep memory at a few strips:
    about ``PATCHES_PER_CHUNK`` patches ran a 12-MP channel in 0.92 s against 1.34-1.50 s for 64
    rows (22-MB temporaries page-faulted in afresh every chunk), and keep small photos in few chunks."""
    c = dct_matrix(n)
    pad = n - 1
    h, w = noisy.shape[-2:]
    padded_h, padded_w = h + 2 * pad, w + 2 * pad
    num, den = noisy.new_zeros(1, 1, padded_h, padded_w), noisy.new_zeros(1, 1, padded_h, padded_w)
    ones = torch.ones(1, 1, n, n)
    patch_rows = (padded_h - n) // stride + 1
    if rows_per_chunk is None:
        rows_per_chunk = max(1, PATCHES_PER_CHUNK // ((padded_w - n) // stride + 1))
    for i0 in range(0, patch_rows, rows_per_chunk):
        a, b = i0 * stride, (min(patch_rows, i0 + rows_per_chunk) - 1) * stride + n
        y = _patch_dct(_padded_rows(noisy, a, b, pad, "reflect"), c, stride)
        p = _patch_dct(_padded_rows(pilot, a, b, pad, "reflect"), c, stride)
        v = F.avg_pool2d(_padded_rows(sigma2, a, b, pad, "replicate"), n, stride=stride).clamp_min_(1e-10)  # 0/0 where noiseless
        g = p.square_().div_(p + v)  # P^2 / (P^2 + sigma^2), in p's storage
        del p
        energy = g[:, :1].square()  # sum of g^2 over the coefficients, plane by plane (a dim-1 reduction was 10x slower)
        for k in range(1, g.shape[1]):
            energy.addcmul_(g[:, k:k + 1], g[:, k:k + 1])
        weight = torch.reciprocal_(energy.mul_(v).clamp_min_(1e-12))
        part_num, part_den = _patch_idct(g.mul_(y).mul_(weight), c, stride), F.conv_transpose2d(weight, ones, stride=stride)
        del y, g
        num[..., a:a + part_num.shape[-2], :part_num.shape[-1]] += part_num
        den[..., a:a + part_den.shape[-2], :part_den.shape[-1]] += part_den
    return num.div_(den)[..., pad:pad + h, pad:pad + w]


def transform_wiener(noisy: torch.Tensor, pilot: torch.Tensor, sigma_scale: float = 1.0, patch: int = 8,
                     stride: int = 3, out: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
    """Empirical Wiener filter of a 1 x C x H x W image in [0, 1] in the DCT of its overlapping
    patches, the pilot estimate telling signal from noise coefficient by coefficient (BM3D's second
    step, without the block matching). Colour images are filtered in opponent colour, each channel
    at its own noise level (:func:`noise_variance`, times ``sigma_scale^2``). Stride 3 (BM3D's step)
    costs 0.54 s/MP here against 0.78 for stride 2, within 0.005 dB on CC15.
    With ``out``, ``weight`` times the result is added into it (no full-size copy) and returned."""
    x, p = noisy.float(), pilot.float()
    if out is None:
        out, weight = torch.zeros_like(x), 1.0
    # one (opponent) channel at a time, added straight back (x = O^T y): no full-size transformed copies
    transform = OPPONENT if x.shape[1] == 3 else torch.eye(x.shape[1])
    for row in transform:
        xc, pc = (torch.einsum("c,nchw->nhw", row, t)[:, None] for t in (x, p))
        s2 = noise_variance(xc).mul_(sigma_scale ** 2)
        filtered = _wiener_channel(xc, pc, s2, patch, stride)
        del xc, pc, s2
        for c in range(x.shape[1]):
            if row[c]:
                out[:, c:c + 1].add_(filtered, alpha=weight * float(row[c]))
        del filtered
    return out


def adaptive_blend(noisy: torch.Tensor, denoised: torch.Tensor, sigma2: Optional[torch.Tensor] = None,
                   window: int = 7, min_gain_db: float = 0.0, mild_sigma: float = 8.0,
                   heavy_sigma: float = 14.0, classical_mix: float = 0.0,
                   nlm_strength: float = 1.25, wiener_refine: float = 0.0) -> Tuple[torch.Tensor, list]:
    """The network's change kept as far as each image's noise explains it, and one
    :class:`StrengthReport` per image. Both images N x C x H x W in [0, 1].

    ``w = min(1, sigma^2 / ((1 - t) D))`` with ``t = heaviness(sigma)``: mild noise gets the Wiener
    shrinkage, heavy noise (t = 1) the full change, where the estimated sigma^2 (biased low by noise
    correlated over more than the ring) would leave noise in. Where the noise is mild the result is
    averaged, with weight ``classical_mix (1 - t)``, with NL-means at ``h = nlm_strength sigma``:
    the blind-spot student and NL-means err in different places (erased fine texture against
    patch-matching artefacts), so their mean beats both on mild noise (benchmarks/real_noise/adaptive.md).
    ``wiener_refine > 0``: that classical estimate is the mean of NL-means and its
    :func:`transform_wiener` refinement (noise sigma times ``wiener_refine``).
    """
    noisy = noisy.float()
    if sigma2 is None:
        sigma2 = noise_variance(noisy)
    # in place where it can be: a 12-MP photo's full-size maps are 48-144 MB each
    out = denoised.float().sub(noisy)  # the change d - x, scaled and shifted into the output below
    local = box_mean(sum(out[:, c:c + 1].square() for c in range(out.shape[1])).div_(out.shape[1]), window)
    reports = []
    for i in range(noisy.shape[0]):
        s2 = sigma2[i].mean()
        sigma = float(s2.sqrt() * 255)
        t = heaviness(sigma, mild_sigma, heavy_sigma)
        w = None if t >= 1 else torch.reciprocal_(local[i].mul_(1 - t).clamp_min_(1e-12)).mul_(sigma2[i]).clamp_(max=1.0)
        if w is not None:
            out[i].mul_(w)
        # the error of the Wiener shrinkage is orthogonal to its change: E|out - y|^2 = sigma^2 - E|out - x|^2
        # (image-wide means, as per-pixel terms are chi-square noisy); capped at 13 dB
        changed = (torch.linalg.vector_norm(out[i], dtype=torch.float64).square() / out[i].numel()).float()  # fp32 sums drift on 36M terms
        out[i].add_(noisy[i])
        residual = (s2 - changed).clamp_min(0.05 * s2)
        gain = float(10 * torch.log10(s2 / residual)) if s2 > 0 else 0.0
        mean_strength = 1.0 if w is None else float(w.mean())
        del w
        noiseless = sigma < NOISELESS_SIGMA
        alpha = 0.0 if noiseless else classical_mix * (1 - t)
        if alpha > 0:
            classical = nl_means(noisy[i], nlm_strength * sigma)
            out[i].mul_(1 - alpha)
            if wiener_refine > 0:  # the classical half: NL-means and its Wiener refinement, equally
                out[i].add_(classical, alpha=alpha / 2)
                transform_wiener(noisy[i:i + 1], classical[None], wiener_refine, out=out[i:i + 1], weight=alpha / 2)
            else:
                out[i].add_(classical, alpha=alpha)
            del classical
        keep = noiseless or gain < min_gain_db
        if keep:
            out[i] = noisy[i]
        reports.append(StrengthReport(noise_sigma=sigma, changed_rms=float(changed.sqrt() * 255),
                                      mean_strength=mean_strength, estimated_gain_db=0.0 if keep else gain,
                                      kept_input=keep, heaviness=t, classical_mix=alpha))
    return out, reports
