"""Schedules follow train.total_iter: the same config gives the same lr(t / total) curve at any run length."""
import math

import pytest
import torch

from atbsn.errors import OptionsError
from atbsn.models.base_model import Progress
from atbsn.train.optim import SCHEDULER_REGISTRY, build_scheduler

RELATIVE = {
    "CosineAnnealingLR": {"type": "CosineAnnealingLR", "eta_min": 1e-3},  # T_max: the whole run
    "MultiStepLR": {"type": "MultiStepLR", "milestones": [0.25, 0.5, 0.75], "gamma": 0.5},
    "StepLR": {"type": "StepLR", "step_size": 0.2, "gamma": 0.7},
    "ExponentialLR": {"type": "ExponentialLR", "final_factor": 0.01},
}


def curve(cfg, total, points=(0.0, 0.1, 0.3, 0.5, 0.6, 0.8, 0.9, 1.0)):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(cfg, opt, total)
    lrs = []
    for t in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return [lrs[round(p * total)] for p in points]


def test_every_scheduler_type_is_covered():
    assert sorted(RELATIVE) == SCHEDULER_REGISTRY.names()


@pytest.mark.parametrize("name", sorted(RELATIVE))
def test_changing_total_iter_alone_keeps_the_curve(name):
    short, long = curve(RELATIVE[name], 200), curve(RELATIVE[name], 2000)
    assert short == pytest.approx(long, rel=1e-9, abs=1e-12)
    assert short[0] == 1.0 and short[-1] < 0.2  # it does decay over the run


def test_absolute_values_still_count_iterations():
    lrs = curve({"type": "CosineAnnealingLR", "T_max": 100, "eta_min": 0.0}, 200, points=(0.25, 0.5))
    assert lrs[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[1] == pytest.approx(0.0, abs=1e-12)  # bottomed out at iteration 100, whatever the run length
    ms = curve({"type": "MultiStepLR", "milestones": [10], "gamma": 0.1}, 1000, points=(0.009, 0.011))
    assert ms == pytest.approx([1.0, 0.1])


@pytest.mark.parametrize("cfg, needle", [
    ({"type": "CosineAnnealingLR", "T_max": 1.5}, "train.scheduler.T_max"),
    ({"type": "MultiStepLR", "milestones": [0.5, 2.0]}, "train.scheduler.milestones[1]"),
    ({"type": "StepLR", "step_size": -3}, "train.scheduler.step_size"),
    ({"type": "ExponentialLR", "gamma": 0.9, "final_factor": 0.1}, "exactly one of 'gamma'"),
])
def test_bad_periods_name_the_key(cfg, needle):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(OptionsError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        build_scheduler(cfg, opt, 100)


def test_cbsn_ramp_follows_the_run_length():
    from atbsn.archs.cbsn import CBSN
    from atbsn.models.cbsn import CBSNModel

    model = CBSNModel({"net": CBSN(width=8, num_modules=1)}, ramp_iters=0.4)
    for total in (100, 5000):
        assert model.ramp(Progress(int(0.2 * total), total, 0, total)) == pytest.approx(0.5)
        assert model.ramp(Progress(int(0.4 * total), total, 0, total)) == 1.0
    fixed = CBSNModel({"net": CBSN(width=8, num_modules=1)}, ramp_iters=50)
    assert fixed.ramp(Progress(25, 5000, 0, 5000)) == pytest.approx(0.5)


def test_quickstart_total_iter_alone_stretches_its_cosine():
    from atbsn.options import load_options

    opt = load_options("options/train/quickstart.yml", ["train.total_iter=2000"])
    lr0 = opt["train"]["optimizer"]["lr"]
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    sched = build_scheduler(opt["train"]["scheduler"], optimizer, opt["train"]["total_iter"])
    assert sched.T_max == 2000
