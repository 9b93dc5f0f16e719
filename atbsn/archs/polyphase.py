"""The same 3x3 convolutions, rewritten for CPU inference speed (equal up to float rounding).

oneDNN runs a conv with 3 input or 3 output channels at a few percent of its 48-channel rate, and
at full resolution those convs (and the copies around them) dominate a small student's time. A
3x3 conv next to a 2x resampling can run at half resolution instead, on 4x the channels:

* :func:`phase_weight`: a 3x3 conv of ``x`` at full resolution, evaluated at the four pixel
  phases, is one 3x3 conv of ``pixel_unshuffle(x, 2)`` at half resolution (4 groups of outputs);
* :func:`upsampled_weight`: a 3x3 conv of ``nearest_upsample_x2(h)`` is one 3x3 conv of ``h``
  whose ``4 C_out`` outputs ``pixel_shuffle`` back to full resolution;
* :func:`replicate_conv3x3`: a replicate-padded 3x3 conv without the padded copy of its input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _phase_taps(phase: int):
    """For output phase ``phase`` (0/1): (tap d of the full-res kernel, low-res offset u + 1,
    input phase p) for every tap, where full-res row 2i + phase + d - 1 = 2(i + u) + p."""
    for d in range(3):
        r = phase + d - 1
        yield d, r // 2 + 1, r % 2


def phase_weight(w: torch.Tensor) -> torch.Tensor:
    """[O, C, 3, 3] -> [4 O, 4 C, 3, 3]: ``conv(pixel_unshuffle(xpad, 2), result)`` (no padding),
    with ``xpad`` = ``x`` padded by 2 px, gives ``conv(x, w, padding=1)`` at pixel (2i + a, 2j + b)
    in output channel ``(2a + b) O + o``; input channels in ``pixel_unshuffle``'s order ``4c + 2p + q``."""
    o, c = w.shape[:2]
    out = w.new_zeros(2, 2, o, c, 2, 2, 3, 3)
    for a in range(2):
        for dy, u, p in _phase_taps(a):
            for b in range(2):
                for dx, v, q in _phase_taps(b):
                    out[a, b, :, :, p, q, u, v] = w[:, :, dy, dx]
    return out.reshape(4 * o, 4 * c, 3, 3)


def upsampled_weight(w: torch.Tensor) -> torch.Tensor:
    """[O, C, 3, 3] -> [4 O, C, 3, 3]: ``pixel_shuffle(conv(hpad, result), 2)`` (no padding, ``hpad``
    = ``h`` padded by 1 px with the padding the full-res conv had) equals
    ``conv(upsample_nearest_x2(h), w, padding=1)``; output channels in ``pixel_shuffle``'s order ``4o + 2a + b``."""
    o, c = w.shape[:2]
    out = w.new_zeros(o, 2, 2, c, 3, 3)
    for a in range(2):
        for dy, u, _ in _phase_taps(a):
            for b in range(2):
                for dx, v, _ in _phase_taps(b):
                    out[:, a, b, :, u, v] += w[:, :, dy, dx]
    return out.reshape(4 * o, c, 3, 3)


def replicate_conv3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``conv2d(pad(x, 1, 'replicate'), w)``: a zero-padded conv, then its four border lines computed
    again from replicate-padded two-pixel strips (no copy of the whole input)."""
    h, wd = x.shape[-2:]
    y = F.conv2d(x, w, padding=1)
    if h < 2 or wd < 2:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w)
    y[..., :1, :] = F.conv2d(F.pad(x[..., :2, :], (1, 1, 1, 0), mode="replicate"), w)
    y[..., -1:, :] = F.conv2d(F.pad(x[..., -2:, :], (1, 1, 0, 1), mode="replicate"), w)
    y[..., :, :1] = F.conv2d(F.pad(x[..., :, :2], (1, 0, 1, 1), mode="replicate"), w)
    y[..., :, -1:] = F.conv2d(F.pad(x[..., :, -2:], (0, 1, 1, 1), mode="replicate"), w)
    return y
