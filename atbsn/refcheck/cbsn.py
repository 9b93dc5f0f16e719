"""C-BSN: the network read from the TensorFlow checkpoint, its inference and loss."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .common import TOL_NET, Result, _load, rel_err

def _cbsn_net(folder: str, bias_file: str = None):
    from ..archs.cbsn import CBSN, cbsn_state_dict_from_tf

    variables = _load(folder, "cbsn_weights_tf.pt")
    if bias_file:
        variables.update(_load(folder, bias_file))
    net = CBSN()
    net.load_state_dict(cbsn_state_dict_from_tf(variables), strict=True)
    return net.eval()


def check_cbsn_weights(folder: str, file: str) -> Iterator[Result]:
    variables = _load(folder, file)
    nbytes = sum(4 * v.numel() for v in variables.values())
    yield Result(file, "98 TF variables, 14,624,524 bytes", rel_err(len(variables), 98) + rel_err(nbytes, 14624524), 0.0)
    count = sum(p.numel() for p in _cbsn_net(folder).parameters())
    yield Result(file, "HWIO->OIHW conversion, strict load, 3,656,131 parameters", rel_err(count, 3656131), 0.0)


def check_cbsn_bias_perturbation(folder: str, file: str) -> Iterator[Result]:
    biases = _load(folder, file)
    net = _cbsn_net(folder, file)
    sd = net.state_dict()
    changed = sum(int(not torch.equal(sd[k.replace("DBSN/", "").replace("/b1", "/bias").replace("/", ".")], v))
                  for k, v in biases.items())
    yield Result(file, f"{len(biases)} biases load over cbsn_weights_tf.pt", float(changed), 0.0)


def check_cbsn_vectors(folder: str, file: str) -> Iterator[Result]:
    from ..inference import denoise
    from ..models.cbsn import CBSNModel, standardize
    from ..utils.image import quantize

    ref = _load(folder, file)
    raw = ref["input_raw_nhwc"].permute(0, 3, 1, 2)
    x64, (mean, std) = standardize(raw.double())
    yield Result(file, "standardisation mean", rel_err(mean.flatten(), ref["std_mean"].flatten()), 1e-12)
    yield Result(file, "standardisation std (floor 1/sqrt(HW))", rel_err(std.flatten(), ref["std_std"].flatten()), 1e-12)
    yield Result(file, "input_std_nchw", rel_err(x64.float(), ref["input_std_nchw"]), 1e-6)
    for prefix, bias_file in (("", None), ("biaspert_", ref["biaspert_file"])):
        net = _cbsn_net(folder, bias_file)
        with torch.no_grad():
            for blind in (True, False):
                key = f"{prefix}out_{'blind' if blind else 'nonblind'}_nchw"
                yield Result(file, key, rel_err(net(ref["input_std_nchw"], blind=blind), ref[key]), TOL_NET)
    model = CBSNModel({"net": _cbsn_net(folder)}, clip_output=False)
    out = denoise(model, raw.double()).double()
    yield Result(file, "infer.py pipeline (reflect-pad 32, non-blind, de-standardise)",
                 rel_err(out.permute(0, 2, 3, 1), ref["infer_out_float64_nhwc"]), TOL_NET)
    uint8 = quantize(out[0].permute(1, 2, 0).numpy(), 8, "truncate")
    differing = float((torch.from_numpy(uint8.astype(np.int64)) - ref["infer_out_uint8_hwc"].long()).abs().gt(0).float().mean())
    yield Result(file, "infer_out_uint8_hwc with 'truncate' (fraction of values off by any LSB)", differing, 1e-3)
