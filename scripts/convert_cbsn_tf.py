#!/usr/bin/env python
"""Convert the official C-BSN TensorFlow checkpoint to a PyTorch state dict, without TensorFlow.

    python scripts/convert_cbsn_tf.py pretrained/CBSN_SIDDtrain.ckpt pretrained/cbsn_sidd.pth

SRC is the checkpoint prefix (or its .index / .data-00000-of-00001 file), or a torch file holding a
dict of TF-named arrays. Every tensor's CRC32C is verified; kernels go HWIO -> OIHW. The output
loads with `path.pretrain_network` (e.g. options/test/test_cbsn.yml).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="the TF checkpoint prefix (PREFIX.index + PREFIX.data-*)")
    p.add_argument("dst", help="the PyTorch state dict to write (.pth)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--num-modules", type=int, default=9)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()

    import torch

    from atbsn.archs.cbsn import CBSN, cbsn_state_dict_from_tf, read_tf_variables
    from atbsn.errors import CheckpointError
    from atbsn.train.checkpoint import atomic_save

    if os.path.exists(args.dst) and not args.overwrite:
        print(f"error: '{args.dst}' exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        variables = read_tf_variables(args.src)
        sd = cbsn_state_dict_from_tf(variables, args.width, args.num_modules)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    net = CBSN(width=args.width, num_modules=args.num_modules)
    net.load_state_dict(sd, strict=True)
    atomic_save({"networks": {"net": net.state_dict()}, "source": os.path.abspath(args.src)}, args.dst)
    n = sum(v.numel() for v in sd.values())
    print(f"{len(variables)} TF variables ({n:,} parameters) -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
