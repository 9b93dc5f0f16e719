#!/usr/bin/env python
"""A mild-noise proxy made from CC15's real camera noise: ``clean + s (noisy - clean)``, saved as a
JPEG and decoded, the way most photos reach a user.

CC15's noisy inputs score 33.4 dB; most photos people take are milder (DSLR crops at ISO 800-6400
score about 36 dB). Scaling the real noise keeps what synthetic Gaussian noise lacks, its spatial
correlation (demosaicing, in-camera processing) and its dependence on brightness, and sets the
level; the JPEG round trip adds the quantisation of the DCT blocks. ``s = 0.75`` gives about 35.9 dB.
Several scales are cycled over the images (sorted by name), like a folder shot at several ISOs:
``0.4 0.6 0.8 1.0 0.5`` gives 30.4-42.4 dB, mean 37.1 (``cc15_mixed``), its faint images the hardest
case for "never worse than the input".

    python scripts/make_mild_noise_set.py --out results/data/cc15_mild     # noisy/ and clean/ PNGs
    python scripts/make_mild_noise_set.py --out results/data/cc15_mixed --scale 0.4 0.6 0.8 1.0 0.5
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from typing import Sequence, Union

import cv2
import numpy as np


def make(source: str, out: str, scale: Union[float, Sequence[float]] = 0.75, quality: int = 95) -> int:
    """Writes ``out/noisy/<name>.png`` (the decoded JPEG), ``out/clean/<name>.png`` and
    ``out/scales.csv`` (each image's factor); returns the count."""
    scales = [float(scale)] if isinstance(scale, (int, float)) else [float(s) for s in scale]
    files = sorted(glob.glob(os.path.join(source, "noisy", "*.png")))
    if not files:
        raise SystemExit(f"error: no noisy PNGs under {source}/noisy")
    for sub in ("noisy", "clean"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    rows = ["name,scale"]
    for i, path in enumerate(files):
        name, scale = os.path.basename(path), scales[i % len(scales)]
        rows.append(f"{name},{scale}")
        noisy = cv2.imread(path, cv2.IMREAD_COLOR).astype(np.float64)
        clean = cv2.imread(os.path.join(source, "clean", name), cv2.IMREAD_COLOR)
        mild = np.clip(np.round(clean + scale * (noisy - clean)), 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", mild, [cv2.IMWRITE_JPEG_QUALITY, quality])
        cv2.imwrite(os.path.join(out, "noisy", name), cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
        cv2.imwrite(os.path.join(out, "clean", name), clean)
    with open(os.path.join(out, "scales.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return len(files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default="../shared/data/CC15")
    p.add_argument("--out", default="results/data/cc15_mild")
    p.add_argument("--scale", type=float, nargs="+", default=[0.75],
                   help="factor on the real noise; several are cycled over the images")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    args = p.parse_args()
    n = make(args.source, args.out, args.scale, args.quality)
    print(f"{n} pairs in {args.out} (noise x {' '.join(map(str, args.scale))}, JPEG quality {args.quality})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
