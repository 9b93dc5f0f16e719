#!/usr/bin/env python
"""Export the SIDD validation (or benchmark) blocks from the official .mat files to PNG folders.

    python scripts/export_sidd_blocks.py datasets/SIDD/ValidationNoisyBlocksSrgb.mat \\
        --gt datasets/SIDD/ValidationGtBlocksSrgb.mat datasets/SIDD/val

writes DST/noisy/0000.png .. 1279.png (and DST/gt/ with the same names), zero-padded in
image-major order (n = 32 i + j): the order AT-BSN's code pairs by sorted file position, and the
names PairedFolderDataset matches.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("noisy", help="ValidationNoisyBlocksSrgb.mat or BenchmarkNoisyBlocksSrgb.mat")
    p.add_argument("dst")
    p.add_argument("--gt", help="ValidationGtBlocksSrgb.mat")
    args = p.parse_args()

    from atbsn.data.sidd import load_blocks
    from atbsn.errors import DataError
    from atbsn.utils.image import write_image

    try:
        sets = [("noisy", args.noisy)] + ([("gt", args.gt)] if args.gt else [])
        for sub, path in sets:
            blocks = load_blocks(path, os.path.splitext(os.path.basename(path))[0])
            for n in range(len(blocks)):
                write_image(os.path.join(args.dst, sub, f"{n:04d}.png"), blocks[n])
            print(f"{len(blocks)} blocks -> {os.path.join(args.dst, sub)}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
