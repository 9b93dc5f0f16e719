"""The recipe for a user's own noisy folder (options/{train,test}/noisy_folder*.yml), the input
centering and the cross-faded tiles it relies on."""
import os

import numpy as np
import pytest
import torch

from atbsn.archs import ATBSN
from atbsn.inference import blended_starts, crossfade, denoise_blended
from atbsn.models.atbsn import ATBSNDistillation, ATBSNModel
from atbsn.options import load_options
from atbsn.utils.image import read_image

from conftest import DATA, ROOT, needs, run_cli, write_png

TRAIN = os.path.join(ROOT, "options", "train", "noisy_folder.yml")
DISTILL = os.path.join(ROOT, "options", "train", "noisy_folder_distill.yml")
TEST = os.path.join(ROOT, "options", "test", "noisy_folder.yml")


def test_crossfaded_tiles_are_full_size_and_weights_sum_to_one():
    assert blended_starts(200, 64, 32) == [0, 32, 64, 96, 128, 136]
    assert blended_starts(50, 64, 32) == [0]
    w = crossfade(64, 32)
    np.testing.assert_allclose((w[32:] + w[:32]).numpy(), 1.0, atol=1e-6)  # neighbours at stride 32
    sizes = []

    def fn(t):
        sizes.append(tuple(t.shape[-2:]))
        return t * 2 + 1

    x = torch.rand(1, 3, 150, 97)
    out = denoise_blended(fn, x, 64, 32)
    torch.testing.assert_close(out, x * 2 + 1, rtol=0, atol=1e-5)  # an affine fn is reproduced exactly
    assert set(sizes) == {(64, 64)} and len(sizes) == 4 * 3  # rows 0,32,64,86; columns 0,32,33


def test_centering_makes_atbsn_brightness_equivariant():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 0.5
    for cls, nets in ((ATBSNModel, {"net": ATBSN(mid_channels=8)}),):
        centred, official = cls(dict(nets), centering="input_mean"), cls(dict(nets), centering="none")
        for m in (centred, official):
            m.train(False)
        shift = 0.3
        d = (centred.denoise(x + shift) - centred.denoise(x) - shift).abs().max().item()
        assert d < 1e-4  # the network sees the same centred input
        d_official = (official.denoise(x + shift) - official.denoise(x) - shift).abs().max().item()
        assert d_official > 1e-2  # zero padding makes the official network's output level-dependent


def test_distillation_targets_use_the_teachers_centering():
    torch.manual_seed(0)
    from atbsn.archs import ATBSNStudentA

    teacher = ATBSN(mid_channels=8)
    model = ATBSNDistillation({"teacher": teacher, "student": ATBSNStudentA()}, hole_sizes=[0, 3],
                              centering="input_mean", init_student_from_teacher=False)
    x = torch.rand(2, 3, 64, 64) * 255
    mean = x.mean(dim=(-2, -1), keepdim=True)
    with torch.no_grad():
        expected = teacher(x - mean, hole_size=3) + mean
    torch.testing.assert_close(model.teacher_targets(x)[1], expected, rtol=1e-5, atol=1e-3)


def test_recipe_configs_chain_stage1_stage2_and_test():
    train, distill = load_options(TRAIN), load_options(DISTILL)
    test = load_options(TEST)
    assert train["name"] == "noisy_folder" and distill["name"] == "noisy_folder_distill"
    assert not train["datasets"].get("val")  # a user has no clean images
    assert distill["path"]["pretrain_network"]["teacher"] == "experiments/noisy_folder/checkpoints/last.pth"
    assert test["path"]["pretrain_network"]["student"] == "experiments/noisy_folder_distill/checkpoints/last.pth"
    assert distill["networks"]["teacher"] == train["networks"]["net"]
    assert test["networks"]["student"] == distill["networks"]["student"]
    assert train["model"]["centering"] == distill["model"]["centering"] == test["model"]["centering"]
    assert train["val"]["tile"]["size"] == train["datasets"]["train"]["crop_size"] and train["val"]["tile"]["blend"]


def _mixed_size_folder(folder):
    """PNG and JPEG, sizes not multiples of 32, not square."""
    rng = np.random.RandomState(0)
    sizes = {"a.png": (70, 90), "b.jpg": (100, 77), "c.png": (65, 130)}
    for name, (h, w) in sizes.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / 9), np.cos(yy / 7), np.sin((xx + yy) / 13)], -1) * 90 + 120
        write_png(str(folder / name), np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return {os.path.splitext(n)[0]: s for n, s in sizes.items()}


def test_the_three_recipe_commands_on_a_mixed_size_folder(tmp_path):
    """The README's commands as written (run in a scratch folder, with the budget cut to 2 steps)."""
    sizes = _mixed_size_folder(tmp_path / "photos")
    quick = ["train.total_iter=2", "train.save_freq=2", "logger.print_freq=1", "logger.use_tensorboard=false"]
    code, out, err = run_cli("train.py", "-opt", TRAIN, "--set", "datasets.train.root=photos", *quick, cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "experiments" / "noisy_folder" / "checkpoints" / "last.pth").exists()
    code, out, err = run_cli("train.py", "-opt", DISTILL, "--set", "datasets.train.root=photos", *quick, cwd=tmp_path)
    assert code == 0, err
    code, out, err = run_cli("test.py", "-opt", TEST, "--input", "photos", "--output", "out", cwd=tmp_path)
    assert code == 0, err
    for name, size in sizes.items():
        img, depth = read_image(str(tmp_path / "out" / f"{name}.png"))
        assert img.shape[:2] == size and depth == 8
    # valid.py as the README shows it, with the photos standing in as their own references
    code, out, err = run_cli("valid.py", "-opt", TEST, "--set", "datasets.val.mine.noisy_root=photos",
                             "datasets.val.mine.clean_root=photos", cwd=tmp_path)
    assert code == 0, err
    assert "mine [basicsr_rgb, 3 images]" in out


@pytest.mark.slow
@needs(os.path.join(DATA, "CC15"))
def test_recipe_never_loses_to_the_input_and_beats_the_best_nlm_on_cc15_images(tmp_path):
    """End to end on 4 CC15 images (mild DSLR noise) with 300 + 200 iterations instead of the
    recipe's 500 + 450 (about 10 minutes on 2 cores): no output below its noisy input (0.1 dB
    margin, the acceptance bound), and the mean above OpenCV NL-means at its best h for these four."""
    import shutil

    import cv2

    from atbsn.metrics import build_metric

    names = ["d800_iso3200_1", "d800_iso6400_2", "d600_iso3200_2", "5dmark3_iso3200_3"]
    (tmp_path / "photos").mkdir()
    for n in names:
        shutil.copy(os.path.join(DATA, "CC15", "noisy", f"{n}.png"), tmp_path / "photos")
    budget = ["train.total_iter=300", "logger.use_tensorboard=false"]  # the cosine follows total_iter
    for opts, extra in ((TRAIN, []), (DISTILL, ["train.total_iter=200"])):
        code, out, err = run_cli("train.py", "-opt", opts, "--set", "datasets.train.root=photos", *budget, *extra,
                                 cwd=tmp_path)
        assert code == 0, err
    code, out, err = run_cli("test.py", "-opt", TEST, "--input", "photos", "--output", "out", cwd=tmp_path)
    assert code == 0, err
    assert "adaptive strength:" in out and (tmp_path / "out" / "strength.csv").exists()
    proto = build_metric("basicsr_rgb")
    ours, noisy, nlm = [], [], {h: [] for h in (3, 5, 10, 15)}
    for n in names:
        clean = read_image(os.path.join(DATA, "CC15", "clean", f"{n}.png"))[0]
        x = read_image(str(tmp_path / "photos" / f"{n}.png"))[0]
        ours.append(proto(read_image(str(tmp_path / "out" / f"{n}.png"))[0], clean)["psnr"])
        noisy.append(proto(x, clean)["psnr"])
        u8 = np.round(x * 255).astype(np.uint8)[:, :, ::-1].copy()
        for h in nlm:
            den = cv2.fastNlMeansDenoisingColored(u8, None, h, h, 7, 21)[:, :, ::-1] / 255.0
            nlm[h].append(proto(den, clean)["psnr"])
    gains = np.array(ours) - np.array(noisy)
    assert gains.min() > -0.1, (ours, noisy)
    best_nlm = max(np.mean(v) for v in nlm.values())
    assert np.mean(ours) > best_nlm, (ours, {h: np.mean(v) for h, v in nlm.items()})
