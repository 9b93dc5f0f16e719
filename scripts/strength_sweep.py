#!/usr/bin/env python
"""Sweep the adaptive strength's settings (atbsn/strength.py) on saved full-strength outputs.

The networks are trained once (the README's commands); what follows their output (the shrinkage,
the NL-means average, its strength) is cheap to vary. Given a paired set and a folder of the
student's full-strength PNGs (``test.py ... --set val.strength.mode=full``), every setting is
scored image by image against the clean references:

    python scripts/strength_sweep.py --set results/data/cc15_mild --full results/sweep/cc15_mild_full

Prints one line per setting: mean PSNR, mean and worst gain over the noisy input, images worse than it.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from atbsn.strength import adaptive_blend, nl_means, noise_variance  # noqa: E402
from atbsn.utils.image import read_image  # noqa: E402


def psnr(pred: torch.Tensor, clean: torch.Tensor) -> float:
    a = (pred.clamp(0, 1) * 255).round()
    b = (clean * 255).round()
    return float(10 * torch.log10(255 ** 2 / (a - b).pow(2).mean().clamp_min(1e-10)))


def load(path: str) -> torch.Tensor:
    return torch.from_numpy(read_image(path, 3, False)[0].astype(np.float32)).permute(2, 0, 1)[None]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", required=True, help="folder with noisy/ and clean/")
    p.add_argument("--full", required=True, help="folder of the full-strength outputs, same names")
    p.add_argument("--mix", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7, 1.0])
    p.add_argument("--nlm", nargs="+", type=float, default=[1.0, 1.25, 1.5, 2.0])
    p.add_argument("--wiener", nargs="+", type=float, default=[0.0], help="wiener_refine values")
    p.add_argument("--json", help="write every score here")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    images = []
    for noisy_path in sorted(glob.glob(os.path.join(args.set, "noisy", "*.png"))):
        name = os.path.basename(noisy_path)
        noisy, clean = load(noisy_path), load(os.path.join(args.set, "clean", name))
        full = load(os.path.join(args.full, name))
        images.append((name, noisy, clean, full, noise_variance(noisy)))
    base = {name: psnr(noisy, clean) for name, noisy, clean, _, _ in images}
    print(f"{len(images)} images, noisy {np.mean(list(base.values())):.2f} dB; full strength "
          f"{np.mean([psnr(f, c) for _, _, c, f, _ in images]):.2f} dB", flush=True)
    scores = {}
    for mix, nlm_strength, wiener in itertools.product(args.mix, args.nlm, args.wiener):
        if mix == 0 and (nlm_strength != args.nlm[0] or wiener != args.wiener[0]):
            continue
        key = f"mix {mix} nlm {nlm_strength} wiener {wiener}"
        per = {}
        for name, noisy, clean, full, s2 in images:
            out, _ = adaptive_blend(noisy, full, s2, classical_mix=mix, nlm_strength=nlm_strength,
                                    wiener_refine=wiener)
            per[name] = psnr(out, clean)
        gains = np.array([per[n] - base[n] for n in per])
        scores[key] = per
        print(f"{key:32s} {np.mean(list(per.values())):.2f} dB  gain {gains.mean():+.2f}  worst {gains.min():+.2f}  "
              f"worse {int((gains < 0).sum())}/{len(gains)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"noisy": base, "scores": scores}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
