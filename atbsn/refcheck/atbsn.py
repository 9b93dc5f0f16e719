"""AT-BSN: the teacher, the students, the distillation step and the metric protocol."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .common import TOL_METRIC, TOL_NET, Result, _load, rel_err

def check_atbsn_metrics(folder: str, file: str) -> Iterator[Result]:
    from ..metrics import build_metric

    ref = _load(folder, file)
    proto = build_metric("atbsn_official")
    psnrs, ssims = [], []
    for i in range(ref["gt_0_255"].shape[0]):
        pred = (ref["pred_0_255"][i] / 255).numpy().transpose(1, 2, 0)
        gt = (ref["gt_0_255"][i] / 255).numpy().transpose(1, 2, 0)
        m = proto(pred, gt)
        psnrs.append(m["psnr"])
        ssims.append(m["ssim"])
        yield Result(file, f"atbsn_official psnr[{i}]", rel_err(m["psnr"], ref["psnr_per_image"][i]), TOL_METRIC)
        yield Result(file, f"atbsn_official ssim_y[{i}]", rel_err(m["ssim"], ref["ssim_y_per_image"][i]), TOL_METRIC)
    yield Result(file, "psnr_batch_mean", rel_err(np.mean(psnrs), ref["psnr_batch_mean"]), TOL_METRIC)
    yield Result(file, "ssim_y_batch_mean", rel_err(np.mean(ssims), ref["ssim_y_batch_mean"]), TOL_METRIC)


# --------------------------------------------------------------------------- AT-BSN networks
def _atbsn_net(folder: str, weights: str, cls_name: str, bias_file: str = None):
    from .. import archs

    net = getattr(archs, cls_name)()
    sd = _load(folder, weights)
    if bias_file:
        sd.update(_load(folder, bias_file))
    net.load_state_dict(sd, strict=True)
    return net.eval()


ATBSN_WEIGHTS = {
    "atbsn_teacher_weights.pt": ("ATBSN", 1268547),
    "atbsn_student_c_nbsn_weights.pt": ("ATBSNStudentC", 1003011),
    "atbsn_student_a_small_weights.pt": ("ATBSNStudentA", 128385),
    "atbsn_student_b_small2_weights.pt": ("ATBSNStudentB", 856656),
}


def check_atbsn_weights(folder: str, file: str) -> Iterator[Result]:
    cls, expected = ATBSN_WEIGHTS[file]
    count = sum(p.numel() for p in _atbsn_net(folder, file, cls).parameters())
    yield Result(file, f"strict load into {cls}, {expected:,} parameters", rel_err(count, expected), 0.0)


def check_atbsn_bias_perturbation(folder: str, file: str) -> Iterator[Result]:
    weights, cls = (("atbsn_teacher_weights.pt", "ATBSN") if "teacher" in file
                    else ("atbsn_student_c_nbsn_weights.pt", "ATBSNStudentC"))
    net = _atbsn_net(folder, weights, cls, file)
    biases = _load(folder, file)
    changed = sum(int(not torch.equal(net.state_dict()[k], v)) for k, v in biases.items())
    yield Result(file, f"{len(biases)} biases load over {weights}", float(changed), 0.0)


def check_atbsn_teacher(folder: str, file: str) -> Iterator[Result]:
    from ..models import ATBSNModel, Progress

    ref = _load(folder, file)
    for prefix, bias_file in (("", None), ("biaspert_", ref["biaspert_file"])):
        net = _atbsn_net(folder, ref["weights_file"], "ATBSN", bias_file)
        with torch.no_grad():
            ks = ref["hole_sizes"].tolist()
            shared = net.heads(net.features(ref["input"]), ks)
            for k, multi in zip(ks, shared):
                out = net(ref["input"], hole_size=k)
                yield Result(file, f"{prefix}output_hole{k}", rel_err(out, ref[f"{prefix}output_hole{k}"]), TOL_NET)
                yield Result(file, f"{prefix}shared-feature heads, k={k}", rel_err(multi, ref[f"{prefix}output_hole{k}"]),
                             TOL_NET)
    net = _atbsn_net(folder, ref["weights_file"], "ATBSN")
    model = ATBSNModel({"net": net})
    model.train(True)
    optimizer = torch.optim.Adam(net.parameters(), 3e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 400000)
    batch = {"noisy": ref["input"] / 255}
    progress = Progress(0, 1, 0, 1)
    loss = model.training_step(batch, progress)["loss"]
    yield Result(file, "stage1_loss_step0", rel_err(loss.item(), ref["stage1_loss_step0"]), TOL_NET)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    loss = model.training_step(batch, progress)["loss"]
    yield Result(file, "stage1_loss_step1 (after one Adam step)", rel_err(loss.item(), ref["stage1_loss_step1"]), 1e-3)


def check_atbsn_students(folder: str, file: str) -> Iterator[Result]:
    ref = _load(folder, file)
    classes = {"c": "ATBSNStudentC", "a": "ATBSNStudentA", "b": "ATBSNStudentB"}
    for key, cls in classes.items():
        net = _atbsn_net(folder, ref[f"weights_file_student_{key}"], cls)
        yield Result(file, f"param_count_student_{key}",
                     rel_err(sum(p.numel() for p in net.parameters()), ref[f"param_count_student_{key}"]), 0.0)
        with torch.no_grad():
            yield Result(file, f"output_student_{key}", rel_err(net(ref["input"]), ref[f"output_student_{key}"]),
                         TOL_NET)
    net = _atbsn_net(folder, ref["weights_file_student_c"], "ATBSNStudentC", ref["biaspert_file_student_c"])
    with torch.no_grad():
        yield Result(file, "biaspert_output_student_c", rel_err(net(ref["input"]), ref["biaspert_output_student_c"]),
                     TOL_NET)


def check_atbsn_distill(folder: str, file: str) -> Iterator[Result]:
    from ..models import ATBSNDistillation, Progress
    from ..models.atbsn import student_init_keys

    ref = _load(folder, file)
    teacher_sd = _load(folder, ref["teacher_weights_file"])
    student_sd = _load(folder, ref["student_seed0_weights_file"])
    keys = student_init_keys(teacher_sd, student_sd)
    yield Result(file, "copied_keys (30, official filter)", float(keys != ref["copied_keys"].split("\n")), 0.0)
    for variant in ("official_init", "seed0_student"):
        teacher = _atbsn_net(folder, ref["teacher_weights_file"], "ATBSN")
        student = _atbsn_net(folder, ref["student_seed0_weights_file"], "ATBSNStudentC")
        model = ATBSNDistillation({"teacher": teacher, "student": student},
                                  hole_sizes=ref["hole_sizes"].tolist(),
                                  init_student_from_teacher=variant == "official_init")
        model.init_training()
        model.train(True)
        out = model.training_step({"noisy": ref["input"] / 255}, Progress(0, 1, 0, 1))
        yield Result(file, f"loss_{variant}", rel_err(out["loss"].item(), ref[f"loss_{variant}"]), TOL_NET)
        terms = torch.stack([out[f"l1_k{k}"] for k in ref["hole_sizes"].tolist()])
        yield Result(file, f"loss_terms_{variant}", rel_err(terms, ref[f"loss_terms_{variant}"]), TOL_NET)
        with torch.no_grad():
            yield Result(file, f"student_output_{variant}",
                         rel_err(student(ref["input"]), ref[f"student_output_{variant}"]), TOL_NET)
        optimizer = torch.optim.Adam(student.parameters(), 3e-4)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        after = model.training_step({"noisy": ref["input"] / 255}, Progress(0, 1, 0, 1))["loss"].item()
        yield Result(file, f"loss_after_one_adam_step_{variant}",
                     rel_err(after, ref[f"loss_after_one_adam_step_{variant}"]), 1e-3)
