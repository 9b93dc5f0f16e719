#!/usr/bin/env python
"""Build Neighbor2Neighbor's training set from the ImageNet ILSVRC2012 validation images.

    python scripts/prepare_n2n_imagenet.py /path/to/ILSVRC2012_img_val datasets/ImageNet_val_256_512

Keeps images whose sides are both in [256, 512], converts them to RGB and re-saves them as JPEG
quality 100 without chroma subsampling (the official training inputs; 44,328 images). Existing
outputs are skipped, so an interrupted run can simply be restarted.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="folder of ImageNet validation images")
    p.add_argument("dst", help="output folder (existing outputs are kept: the script restarts)")
    p.add_argument("--min-side", type=int, default=256, help="keep images whose shorter side is at least this")
    p.add_argument("--max-side", type=int, default=512, help="... and at most this")
    args = p.parse_args()

    import cv2
    from tqdm import tqdm

    from atbsn.errors import DataError
    from atbsn.utils.image import list_images

    try:
        files = list_images(args.src, "ImageNet validation folder")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.dst, exist_ok=True)
    kept = 0
    for path in tqdm(files, desc="selecting"):
        out = os.path.join(args.dst, os.path.splitext(os.path.basename(path))[0] + ".jpg")
        if os.path.exists(out):
            kept += 1
            continue
        img = cv2.imread(path, cv2.IMREAD_COLOR)  # decodes to 3-channel BGR (gray/CMYK converted)
        if img is None:
            print(f"warning: cannot read '{path}', skipped", file=sys.stderr)
            continue
        h, w = img.shape[:2]
        if not (args.min_side <= h <= args.max_side and args.min_side <= w <= args.max_side):
            continue
        params = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        tmp = out + ".tmp.jpg"
        cv2.imwrite(tmp, img, params)
        os.replace(tmp, out)
        kept += 1
    print(f"{kept} images in {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
