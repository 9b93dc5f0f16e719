"""Neighbor2Neighbor: the U-Net, the neighbour sub-sampler, the loss and its metric protocol."""
from __future__ import annotations

from typing import Iterator

import torch

from .common import TOL_METRIC, TOL_NET, Result, _load, rel_err

def _n2n_net(folder: str, weights: str):
    from ..archs import N2NUNet

    net = N2NUNet(3, 3, 48)
    net.load_state_dict(_load(folder, weights), strict=True)
    return net.eval()


def check_n2n_weights(folder: str, file: str) -> Iterator[Result]:
    net = _n2n_net(folder, file)
    count = sum(p.numel() for p in net.parameters())
    yield Result(file, "strict load, parameter count 1,259,475", rel_err(count, 1259475), 0.0)


def check_n2n_vectors(folder: str, file: str) -> Iterator[Result]:
    from ..models.base_model import Progress
    from ..models.neighbor2neighbor import Neighbor2Neighbor, neighbor2neighbor_loss, subsample

    ref = _load(folder, file)
    with torch.no_grad():
        yield Result(file, "output (official init)", rel_err(_n2n_net(folder, ref["weights_file"])(ref["input"]),
                                                              ref["output"]), TOL_NET)
        net = _n2n_net(folder, ref["weights_file_perturbed"])
        yield Result(file, "output_perturbed", rel_err(net(ref["input"]), ref["output_perturbed"]), TOL_NET)
        x, pairs = ref["sub_input"], ref["sub_pair_idx"]
        n, _, h, w = x.shape
        for k, mask in enumerate((ref["sub_mask1"], ref["sub_mask2"])):
            from_mask = mask.view(n, h // 2, w // 2, 4).float().argmax(-1)
            yield Result(file, f"sub_mask{k + 1} == sub_pair_idx[..., {k}]",
                         float((from_mask != pairs[..., k]).sum()), 0.0)
        sub1, sub2 = subsample(x, pairs[..., 0]), subsample(x, pairs[..., 1])
        yield Result(file, "sub_image1", rel_err(sub1, ref["sub_image1"]), 0.0)
        yield Result(file, "sub_image2", rel_err(sub2, ref["sub_image2"]), 0.0)
        net = _n2n_net(folder, ref["sub_weights_file"])
        full = net(x)
        yield Result(file, "sub_full_output", rel_err(full, ref["sub_full_output"]), TOL_NET)
        f1, f2 = subsample(full, pairs[..., 0]), subsample(full, pairs[..., 1])
        yield Result(file, "sub_full_output_sub1", rel_err(f1, ref["sub_full_output_sub1"]), TOL_NET)
        yield Result(file, "sub_full_output_sub2", rel_err(f2, ref["sub_full_output_sub2"]), TOL_NET)
        out1 = net(sub1)
        yield Result(file, "sub_output_on_sub1", rel_err(out1, ref["sub_output_on_sub1"]), TOL_NET)
        model = Neighbor2Neighbor({"net": net}, increase_ratio=2.0)
        for epoch in (1, 100):
            weight = model.regulariser_weight(Progress(0, 100, epoch - 1, 1))
            total, rec, reg = neighbor2neighbor_loss(out1, sub2, f1, f2, weight)
            if epoch == 1:
                yield Result(file, "loss_rec", rel_err(rec.item(), ref["loss_rec"]), TOL_NET)
                yield Result(file, "loss_reg_unweighted", rel_err(reg.item(), ref["loss_reg_unweighted"]), TOL_NET)
            yield Result(file, f"loss_total_epoch{epoch}", rel_err(total.item(), ref[f"loss_total_epoch{epoch}"]),
                         TOL_NET)


def check_n2n_metrics(folder: str, file: str) -> Iterator[Result]:
    from ..metrics import build_metric

    ref = _load(folder, file)
    proto = build_metric("n2n_official")
    for i in range(ref["target_uint8_hwc"].shape[0]):
        target = ref["target_uint8_hwc"][i].numpy() / 255.0
        other = ref["ref_uint8_hwc"][i].numpy() / 255.0
        m = proto(other, target)
        yield Result(file, f"n2n_official psnr[{i}]", rel_err(m["psnr"], ref["psnr"][i]), TOL_METRIC)
        yield Result(file, f"n2n_official ssim[{i}]", rel_err(m["ssim"], ref["ssim"][i]), TOL_METRIC)
