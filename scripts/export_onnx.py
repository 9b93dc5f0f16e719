#!/usr/bin/env python
"""Export the inference network the options name, with its checkpoint, to one ONNX file.

    python scripts/export_onnx.py -opt options/test/noisy_folder.yml --output student.onnx
    python scripts/export_onnx.py -opt OPT --set path.pretrain_network=W.pth --output net.onnx

The file holds the model's whole inference step ([0, 1] NCHW float32 in and out, dynamic height and
width in multiples of its ``atbsn.input_multiple`` metadata) and the metadata (arch, options hash,
training revision, value range, input multiple). Run it with ``test.py`` (``--set
path.pretrain_network=net.onnx``) or ``Denoiser.from_onnx``; needs ``pip install -e .[onnx]``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def training_revision(weights) -> str:
    """The git revision train.py recorded beside the checkpoint (experiments/NAME/git_revision.txt)."""
    paths = weights.values() if isinstance(weights, dict) else [weights]
    for p in paths:
        if isinstance(p, str):
            candidate = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(p))), "git_revision.txt")
            if os.path.isfile(candidate):
                return open(candidate).read().strip()
    return "unknown"


def main(argv=None) -> int:
    from atbsn.cli import _guard, _parser

    p = _parser("scripts/export_onnx.py", __doc__.split("\n")[0])
    p.add_argument("--output", required=True, metavar="FILE.onnx", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args(argv)

    def run(_):
        import torch

        from atbsn.deploy import export_onnx
        from atbsn.errors import OptionsError
        from atbsn.options import load_options
        from atbsn.models.setup import setup_model

        opt = load_options(args.opt, args.set)
        if not opt["path"]["pretrain_network"]:
            raise OptionsError(f"{args.opt}: set path.pretrain_network to the weights to export")
        model = setup_model(opt, torch.device("cpu"))
        meta = export_onnx(model, opt, args.output, args.opset, training_revision(opt["path"]["pretrain_network"]))
        print(f"wrote {args.output}: {meta['model']} / {meta['arch']}, input multiple {meta['input_multiple']}, "
              f"options {meta['options_sha256']}, revision {meta['training_revision'][:12]}")
        return 0

    return _guard(run, [])


if __name__ == "__main__":
    sys.exit(main())
