#!/usr/bin/env python
"""Cut SIDD-Medium sRGB captures into PNG patches for training.

    python scripts/prepare_sidd.py datasets/SIDD_Medium_Srgb datasets/SIDD/train_patches --preset atbsn
    python scripts/prepare_sidd.py datasets/SIDD_Medium_Srgb datasets/SIDD/cbsn_patches --preset cbsn

Presets: ``cbsn`` = C-BSN's recipe (256 px, stride 200, starting 10 px in from the border, all 320
noisy captures); ``atbsn`` = 512 px with 128 px overlap (stride 384). ``--size/--stride/--border``
override a preset; ``--gt`` also cuts the ground truth (into DST/gt, noisy into DST/noisy).
Patches are named ``<scene>_<capture>_<y>_<x>.png``. Interrupted runs resume: a capture whose
patches are all written is skipped (marker files in DST/.done).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {"cbsn": (256, 200, 10), "atbsn": (512, 384, 0)}


def positions(length: int, size: int, stride: int, border: int):
    return list(range(border, length - border - size + 1, stride))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="SIDD_Medium_Srgb (or its Data folder)")
    p.add_argument("dst")
    p.add_argument("--preset", choices=sorted(PRESETS), default="atbsn")
    p.add_argument("--size", type=int)
    p.add_argument("--stride", type=int)
    p.add_argument("--border", type=int)
    p.add_argument("--gt", action="store_true", help="also cut the ground truth (noisy -> DST/noisy, GT -> DST/gt)")
    args = p.parse_args()

    import cv2
    from tqdm import tqdm

    from atbsn.data.sidd import find_sidd_medium
    from atbsn.errors import DataError

    size, stride, border = PRESETS[args.preset]
    size, stride, border = args.size or size, args.stride or stride, args.border if args.border is not None else border
    try:
        captures = find_sidd_medium(args.src)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done_dir = os.path.join(args.dst, ".done")
    os.makedirs(done_dir, exist_ok=True)
    written = skipped = 0
    for noisy, gt in tqdm(captures, desc=f"cutting {size}px / stride {stride}", unit="capture",
                          disable=not sys.stderr.isatty()):
        scene = os.path.basename(os.path.dirname(noisy))
        capture = os.path.splitext(os.path.basename(noisy))[0][-3:]
        marker = os.path.join(done_dir, f"{scene}_{capture}")
        if os.path.exists(marker):
            skipped += 1
            continue
        sources = [(noisy, "noisy" if args.gt else "")] + ([(gt, "gt")] if args.gt else [])
        if args.gt and gt is None:
            print(f"error: no GT file for '{noisy}'", file=sys.stderr)
            return 2
        for path, sub in sources:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                print(f"error: cannot read image '{path}'", file=sys.stderr)
                return 2
            out_dir = os.path.join(args.dst, sub)
            os.makedirs(out_dir, exist_ok=True)
            h, w = img.shape[:2]
            for y in positions(h, size, stride, border):
                for x in positions(w, size, stride, border):
                    out = os.path.join(out_dir, f"{scene}_{capture}_{y:04d}_{x:04d}.png")
                    tmp = out[:-4] + ".tmp.png"
                    cv2.imwrite(tmp, img[y: y + size, x: x + size])
                    os.replace(tmp, out)
                    written += 1
        open(marker, "w").close()
    print(f"{written} patches written, {skipped} capture(s) already done, into {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
