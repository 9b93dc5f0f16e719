import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("ATBSN_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
REFERENCE = os.path.join(SHARED, "reference")
DATA = os.path.join(SHARED, "data")

torch.set_num_threads(2)


def needs(path):
    return pytest.mark.skipif(not os.path.exists(path), reason=f"{path} not available")


def write_png(path, img):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    assert cv2.imwrite(path, np.ascontiguousarray(img))


@pytest.fixture
def image_folder(tmp_path):
    """Six smooth 96x128 RGB images (learnable content), the same names in clean/ and noisy/."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float64)
    for i in range(6):
        base = np.stack([np.sin(xx / (7 + i)) , np.cos(yy / (5 + i)), np.sin((xx + yy) / 11)], -1) * 0.4 + 0.5
        clean = np.clip(base * 255, 0, 255).astype(np.uint8)
        noisy = np.clip(base * 255 + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
        write_png(str(tmp_path / "clean" / f"img{i}.png"), clean)
        write_png(str(tmp_path / "noisy" / f"img{i}.png"), noisy)
    return tmp_path


def tiny_options(tmp_path, root, **extra):
    """A small Neighbor2Neighbor run over ``root``; extra top-level keys replace sections."""
    opt = {
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "model": {"type": "Neighbor2Neighbor"},
        "networks": {"net": {"type": "N2NUNet", "n_feature": 8}},
        "datasets": {
            "train": {"type": "SyntheticNoiseDataset", "root": str(root / "clean"), "crop_size": 64,
                      "noise": {"type": "gaussian", "sigma": 25}, "augment": "dihedral", "batch_size": 2,
                      "num_workers": 0},
            "val": {"set": {"type": "PairedFolderDataset", "noisy_root": str(root / "noisy"),
                            "clean_root": str(root / "clean")}},
        },
        "train": {"total_iter": 6, "optimizer": {"type": "Adam", "lr": 1e-3},
                  "scheduler": {"type": "CosineAnnealingLR", "T_max": 6}, "save_freq": 2, "keep_checkpoints": 2},
        "val": {"val_freq": 3, "metrics": ["basicsr_rgb"]},
        "logger": {"print_freq": 1, "use_tensorboard": False},
        "path": {"experiments_root": str(tmp_path / "experiments"), "results_root": str(tmp_path / "results")},
    }
    opt.update(extra)
    return opt


def write_options(path, opt):
    with open(path, "w") as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_cli(script, *args, cwd=ROOT):
    """Run one of the entry points as a user would; returns (returncode, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2")
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=900)
    return p.returncode, p.stdout, p.stderr


def student_a_options(tmp_path, root, name):
    """Options evaluating a seed-0 AT-BSN student A (a cheap network) saved as a plain state dict."""
    from atbsn.archs import ATBSNStudentA

    torch.manual_seed(0)
    torch.save(ATBSNStudentA().state_dict(), tmp_path / "student_a.pth")
    opt = tiny_options(tmp_path, root, name=name, model={"type": "Neighbor2Neighbor"},
                       networks={"net": {"type": "ATBSNStudentA"}})
    opt["path"]["pretrain_network"] = str(tmp_path / "student_a.pth")
    return opt
