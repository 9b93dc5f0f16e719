"""AT-BSN (Chen et al., CVPR 2024): asymmetric tunable blind spots, and multi-teacher distillation.

Stage 1 (``ATBSNModel``). One blind-spot teacher T(x; k) is trained self-supervised with a large
blind spot, k_a = 9, which suppresses the spatially correlated noise of real sRGB images:

    L = mean |T(x; k_a) - x|           (x: the noisy image on [0, 255])

and is applied with a small blind spot, k_b = 3, which keeps more of the local detail.

Stage 2 (``ATBSNDistillation``). The frozen teacher at every hole size in Ks = {0,1,3,5,7,9,11}
(k = 0 is non-blind) supervises a light non-blind student S:

    L = sum_k mean |S(x) - sg(T(x; k))|

whose per-pixel minimiser is the median of the teachers. The rotated U-Net of the teacher does
not depend on k, so it runs once per batch, and so does the first (largest) 1x1 layer of its head;
only shift + un-rotate + the two small 1x1 layers repeat per k.
"""
from __future__ import annotations

from typing import Dict, List, Literal, Optional

import torch

from ..errors import OptionsError
from .base_model import DenoisingModel, Progress

DEFAULT_TEACHERS = (0, 1, 3, 5, 7, 9, 11)
Centering = Literal["none", "input_mean"]


def center(x: torch.Tensor, centering: str):
    """``centering: input_mean`` runs a network on x - mean(x) (per input and channel: a training
    crop, an inference tile) and adds the mean back. The U-Nets zero-pad every shifted conv and
    pool and look ~288 px away, wider than a training crop, so uncentred the padding reads as black
    and the brightness a network learns depends on the input's size (+40..68 gray levels on
    256-512 px SIDD images from a teacher trained on 64-px crops). ``none``: the official model."""
    if centering == "none":
        return x, torch.zeros((), dtype=x.dtype, device=x.device)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return x - mean, mean


CONFORMING_CROP = (32, "a multiple of 32: AT-BSN trains on square crops that the network takes without padding "
                       "(e.g. 256 or 128)")


def require_crop(opt: dict) -> None:
    """Training never pads: mirrored padding could show a blind-spot network its own centre pixel."""
    if (opt["datasets"].get("train") or {}).get("crop_size") is None:
        raise OptionsError("datasets.train.crop_size is required for AT-BSN training (square, a multiple of 32)")


# The official distilled release (atbsn-d_*.pth) is one state dict holding both networks.
OFFICIAL_PREFIXES = {"teacher": "bsn.", "student": "nbsn.", "net": "bsn."}


def official_prefixed_state_dict(obj: dict, role: str, path: str) -> Optional[Dict[str, torch.Tensor]]:
    """From the official container, the role's keys without their prefix ('bsn.' teacher, 'nbsn.' student)."""
    prefix = OFFICIAL_PREFIXES.get(role)
    if not prefix or not any(isinstance(k, str) and k.startswith(prefix) for k in obj):
        return None
    return {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}


class ATBSNModel(DenoisingModel):
    """Stage 1: self-supervised blind-spot training of the AT-BSN teacher."""

    value_scale = 255.0
    official_state_dict = staticmethod(official_prefixed_state_dict)
    default_losses = {"rec": {"type": "L1Loss"}}  # T(x; k_a) against the noisy x

    def __init__(self, networks, train_hole_size: int = 9, valid_hole_size: int = 3,
                 ensemble_hole_sizes: Optional[List[int]] = None, centering: Centering = "none",
                 losses: Optional[Dict[str, dict]] = None):
        super().__init__(networks, losses)
        self.centering = centering
        self.train_hole_size, self.valid_hole_size = train_hole_size, valid_hole_size
        self.ensemble_hole_sizes = ensemble_hole_sizes
        net = self.networks["net"]
        if not hasattr(net, "shift_for"):
            raise OptionsError(f"ATBSNModel trains a tunable blind-spot network (type: ATBSN), got {type(net).__name__}")
        for k in [train_hole_size, valid_hole_size, *(ensemble_hole_sizes or [])]:
            net.shift_for(k)

    def train_crop_multiple(self):
        return CONFORMING_CROP

    def check_options(self, opt: dict) -> None:
        require_crop(opt)

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        noisy = self.prepare_input(batch["noisy"]) * self.value_scale
        x, mean = center(noisy, self.centering)
        loss = self.losses["rec"](self.run("net", x, hole_size=self.train_hole_size) + mean, noisy)
        return {"loss": loss}

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, mean = center(x, self.centering)
        if not self.ensemble_hole_sizes:
            return self.run("net", x, hole_size=self.valid_hole_size) + mean
        net = self.networks["net"]  # test-time teacher ensemble (paper Table 2): one U-Net pass, several heads
        return torch.stack(net.heads(net.features(x), self.ensemble_hole_sizes)).mean(0) + mean


class ATBSNDistillation(DenoisingModel):
    """Stage 2: distil the frozen teacher, at every hole size, into a non-blind student."""

    network_roles = ("teacher", "student")
    trainable_roles = ("student",)
    inference_role = "student"
    value_scale = 255.0
    official_state_dict = staticmethod(official_prefixed_state_dict)
    default_losses = {"distill": {"type": "L1Loss"}}  # S(x) against each T(x; k)

    def __init__(self, networks, hole_sizes: List[int] = list(DEFAULT_TEACHERS), mean_teacher: bool = False,
                 init_student_from_teacher: bool = True, centering: Centering = "none",
                 losses: Optional[Dict[str, dict]] = None):
        super().__init__(networks, losses)
        self.centering = centering  # the teacher's (stage 1) setting; the student sees the image as it is
        teacher = self.networks["teacher"]
        if not (hasattr(teacher, "features") and hasattr(teacher, "heads")):
            raise OptionsError(f"networks.teacher must be an AT-BSN teacher (type: ATBSN), got {type(teacher).__name__}")
        for k in hole_sizes:
            teacher.shift_for(k)
        self.hole_sizes, self.mean_teacher = list(hole_sizes), mean_teacher
        self.init_student_from_teacher = init_student_from_teacher
        teacher.requires_grad_(False)

    def train_crop_multiple(self):
        return CONFORMING_CROP

    def check_options(self, opt: dict) -> None:
        require_crop(opt)
        weights = opt["path"]["pretrain_network"]
        if not isinstance(weights, dict) or not weights.get("teacher"):
            raise OptionsError("distillation needs the trained teacher: set path.pretrain_network.teacher "
                               "(a stage-1 checkpoint or the official atbsn_best_*.pth)")

    def init_training(self) -> None:
        if self.init_student_from_teacher:
            copy_teacher_unet(self.networks["teacher"], self.networks["student"])

    def teacher_targets(self, x: torch.Tensor) -> List[torch.Tensor]:
        teacher = self.networks["teacher"]
        x, mean = center(x, self.centering)
        with torch.no_grad():
            return [t + mean for t in teacher.heads(teacher.features(x), self.hole_sizes)]

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        noisy = self.prepare_input(batch["noisy"]) * self.value_scale
        targets = self.teacher_targets(noisy)
        out = self.run("student", noisy)
        if self.mean_teacher:  # ablation: L1 to the averaged target
            return {"loss": self.losses["distill"](out, torch.stack(targets).mean(0))}
        terms = [self.losses["distill"](out, t) for t in targets]
        losses = {"loss": torch.stack(terms).sum()}
        losses.update({f"l1_k{k}": t.detach() for k, t in zip(self.hole_sizes, terms)})
        return losses


def student_init_keys(teacher_state: Dict[str, torch.Tensor], student_state: Dict[str, torch.Tensor]) -> List[str]:
    """The official bsn -> nbsn copy: every teacher ``unet.*`` key except ``unet.dec1.*`` (30 keys)."""
    return [k for k in teacher_state if k.startswith("unet.") and not k.startswith("unet.dec1.")
            and k in student_state and student_state[k].shape == teacher_state[k].shape]


def copy_teacher_unet(teacher: torch.nn.Module, student: torch.nn.Module) -> List[str]:
    t, s = teacher.state_dict(), student.state_dict()
    keys = student_init_keys(t, s)
    if not keys:
        raise OptionsError(f"init_student_from_teacher: the student {type(student).__name__} shares no U-Net keys "
                           f"with the teacher; use ATBSNStudentC or set model.init_student_from_teacher: false")
    with torch.no_grad():
        for k in keys:
            s[k].copy_(t[k])
    return keys
