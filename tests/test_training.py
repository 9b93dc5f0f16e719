import os
import subprocess
import sys

import pytest
import torch

from atbsn.errors import TrainingError
from atbsn.options import validate
from atbsn.train.checkpoint import load_file
from atbsn.train.loop import Trainer

from conftest import ROOT, tiny_options


def _weights(path):
    return load_file(path)["networks"]["net"]


def _fit(opt, resume=False):
    return Trainer(validate(opt), auto_resume=resume).fit()


def test_resume_is_bit_exact_and_survives_a_truncated_checkpoint(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="exact")
    opt["train"].update(total_iter=6, save_freq=3, keep_checkpoints=5)
    opt["datasets"]["train"]["repeat"] = 1  # 3 batches per epoch: the stop falls on an epoch boundary too
    _fit(opt)
    ckpts = os.path.join(tmp_path, "experiments", "exact", "checkpoints")
    uninterrupted = _weights(os.path.join(ckpts, "last.pth"))
    assert sorted(os.listdir(ckpts)) == ["best.pth", "iter_00000003.pth", "iter_00000006.pth", "last.pth"]

    # Stop after 3 iterations: only the iteration-3 checkpoint remains; last.pth is truncated.
    os.remove(os.path.join(ckpts, "iter_00000006.pth"))
    data = open(os.path.join(ckpts, "last.pth"), "rb").read()
    with open(os.path.join(ckpts, "last.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    _fit(opt, resume=True)
    resumed = _weights(os.path.join(ckpts, "last.pth"))
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        assert torch.equal(resumed[k], uninterrupted[k]), k


def test_resume_mid_epoch_with_workers_is_exact(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="mid")
    opt["train"].update(total_iter=5, save_freq=2, keep_checkpoints=5)
    opt["datasets"]["train"].update(repeat=2, num_workers=2)  # 6 batches per epoch, stop at 2 and 4
    _fit(opt)
    ckpts = os.path.join(tmp_path, "experiments", "mid", "checkpoints")
    uninterrupted = _weights(os.path.join(ckpts, "last.pth"))
    os.remove(os.path.join(ckpts, "last.pth"))
    os.remove(os.path.join(ckpts, "iter_00000004.pth"))
    opt["datasets"]["train"]["num_workers"] = 0  # the data stream does not depend on the worker count
    _fit(opt, resume=True)
    resumed = _weights(os.path.join(ckpts, "last.pth"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_run_folder_contents_and_archiving(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="folder")
    opt["train"]["total_iter"] = 2
    opt["logger"]["use_tensorboard"] = True
    opt["val"].update(val_freq=2, save_images=1)
    summary = _fit(opt)
    root = os.path.join(tmp_path, "experiments", "folder")
    for name in ("options.yml", "command.txt", "git_revision.txt", "train.log", "checkpoints/last.pth"):
        assert os.path.exists(os.path.join(root, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(root, "tb")))
    assert os.path.exists(os.path.join(root, "visualization", "iter_00000002", "set", "img0.png"))
    log = open(os.path.join(root, "train.log")).read()
    assert "iter 2/2" in log and "validation @ 2" in log
    s = summary["set"]["basicsr_rgb"]
    assert s["count"] == 6 and 0 < s["psnr"] < 60 and 20 < s["input_psnr"] < 30
    state = load_file(os.path.join(root, "checkpoints", "last.pth"))
    assert {"networks", "optimizer", "scheduler", "scaler", "rng", "iteration", "epoch", "batch_in_epoch",
            "options", "model_state"} <= set(state)
    _fit(opt)  # a second run with the same name keeps the first one
    archived = [d for d in os.listdir(os.path.join(tmp_path, "experiments")) if d.startswith("folder_archived_")]
    assert len(archived) == 1


def test_non_finite_loss_stops_with_iteration_and_keeps_checkpoint(tmp_path, image_folder, monkeypatch):
    opt = tiny_options(tmp_path, image_folder, name="nan")
    opt["train"].update(total_iter=6, save_freq=2)
    trainer = Trainer(validate(opt))
    original = trainer.model.training_step

    def poisoned(batch, progress):
        out = original(batch, progress)
        if progress.iteration == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "training_step", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss .* at iteration 4"):
        trainer.fit()
    last = load_file(os.path.join(tmp_path, "experiments", "nan", "checkpoints", "last.pth"))
    assert last["iteration"] == 3  # saved as best after the validation at 3


def test_grad_clip_amp_bf16_and_channels_last_run_on_cpu(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="opts")
    opt["train"].update(total_iter=2, grad_clip=0.1, amp="bf16", channels_last=True)
    opt["val"]["val_freq"] = 2
    summary = _fit(opt)
    assert 0 < summary["set"]["basicsr_rgb"]["psnr"] < 60


def test_train_py_reuses_freed_memory_instead_of_faulting_in_new_pages():
    """keep_freed_memory (called by train.py): the tensors of a training step reuse the memory the
    previous step freed, instead of page-faulting fresh memory in; ATBSN_MALLOC=system keeps
    glibc's default. Measured as minor page faults per step of a small conv net."""
    code = """
import resource, torch
from atbsn.utils.allocator import keep_freed_memory
on = keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 3, 3, padding=1))
x = torch.rand(4, 3, 256, 256)
def step():
    net.zero_grad(set_to_none=True)
    net(x).abs().mean().backward()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(on, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""
    faults = {}
    for mode in ("", "system"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "ATBSN_MALLOC": mode})
        assert out.returncode == 0, out.stderr
        on, n = out.stdout.split()
        faults[mode] = (on, int(n))
    assert faults[""][0] == "True" and faults["system"][0] == "False"
    assert faults[""][1] * 5 < faults["system"][1], faults  # measured: 3.3k against 74k faults per step
