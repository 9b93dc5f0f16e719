#!/usr/bin/env python
"""Diagnose a C-BSN checkpoint on a paired folder: the official inference against variants that
remove the mismatch between training (each patch standardised with its own statistics) and
inference (the whole image's statistics), with the mean error where the scene is dark.

    python scripts/cbsn_inference_variants.py CKPT --noisy ../shared/data/CC15/noisy --clean ../shared/data/CC15/clean

Variants: ``official`` (whole-image standardisation, reflect pad 32, one non-blind pass);
``blind`` (the same, blind); ``local_mean`` (the image minus its ``--window`` box mean, divided by the
whole image's std, then the box mean added back); ``tiles`` (non-overlapping ``--window`` tiles,
each standardised with its own statistics as in training). PSNR is the ``basicsr_rgb`` convention
(output rounded to 8 bits); "dark bias" is the mean output minus clean, in 8-bit levels per
channel, over pixels whose clean mean is below 0.15.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--noisy", required=True)
    p.add_argument("--clean", required=True)
    p.add_argument("--window", type=int, default=61, help="box / tile side in pixels (default 61)")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    from atbsn.inference import Denoiser
    from atbsn.models.cbsn import local_mean as box_mean, standardize
    from atbsn.utils.image import read_image

    net = Denoiser.from_checkpoint(args.checkpoint, device="cpu").model.networks["net"]

    def one_pass(z, blind=False):
        pad = 32 if min(z.shape[-2:]) > 32 else 0
        zp = F.pad(z, (pad,) * 4, mode="reflect") if pad else z
        out = net(zp, blind=blind)
        return out[..., pad:out.shape[-2] - pad, pad:out.shape[-1] - pad]

    def official(x, blind=False):
        z, (mean, std) = standardize(x)
        return one_pass(z, blind) * std + mean

    def local_mean(x):  # whole-image std of x itself, unlike model.centering (std of x - box)
        box = box_mean(x, args.window)
        _, (_, std) = standardize(x)
        return one_pass((x - box) / std) * std + box

    def tiles(x):
        out = torch.empty_like(x)
        k = args.window
        for y in range(0, x.shape[-2], k):
            for c in range(0, x.shape[-1], k):
                out[..., y:y + k, c:c + k] = official(x[..., y:y + k, c:c + k])
        return out

    variants = {"noisy input": lambda x: x, "official": official, "blind": lambda x: official(x, True),
                "local_mean": local_mean, "tiles": tiles}
    psnr = {k: [] for k in variants}
    dark = {k: [] for k in variants}
    names = sorted(glob.glob(os.path.join(args.noisy, "*")))
    if not names:
        sys.exit(f"{args.noisy}: no images")
    for path in names:
        clean = read_image(os.path.join(args.clean, os.path.basename(path)), 3, False)[0]
        x = torch.from_numpy(read_image(path, 3, False)[0]).permute(2, 0, 1)[None].float()
        for name, fn in variants.items():
            with torch.no_grad():
                out = fn(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            out = np.round(out * 255) / 255
            psnr[name].append(10 * np.log10(1 / np.mean((out - clean) ** 2)))
            mask = clean.mean(-1) < 0.15
            if mask.any():
                dark[name].append((out[mask] - clean[mask]).mean(0) * 255)
    print(f"{len(names)} images, window {args.window}")
    for name in variants:
        bias = ", ".join(f"{v:+.1f}" for v in np.mean(dark[name], 0)) if dark[name] else "-"
        print(f"{name:12s} PSNR {np.mean(psnr[name]):.2f} dB  dark bias (R, G, B) {bias}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
