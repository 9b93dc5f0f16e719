"""The README's scripts, quick start and official configs, run as a user runs them."""
import json
import os
import re
import shutil

import pytest

from conftest import DATA, REFERENCE, ROOT, needs, run_cli


@needs(REFERENCE)
def test_verify_reference_passes_and_fails_on_a_corrupted_copy(tmp_path):
    code, out, err = run_cli("scripts/verify_reference.py", REFERENCE)
    assert code == 0, out + err
    assert re.search(r"^(\d+) passed, 0 failed, 0 errors", out, re.M) and int(re.search(r"^(\d+) passed", out, re.M).group(1)) >= 30
    assert "PASS  n2n_unet_vectors.pt" in out and "loss_total_epoch100" in out
    # a corrupted copy of an understood file must fail the run
    for f in ("n2n_unet_vectors.pt", "n2n_unet_weights.pt", "n2n_unet_perturbed_weights.pt", "n2n_metrics_vectors.pt",
              "atbsn_metrics_vectors.pt"):
        shutil.copy(os.path.join(REFERENCE, f), tmp_path / f)
    (tmp_path / "n2n_metrics_vectors.pt").write_bytes(b"not a torch file")
    code, out, _ = run_cli("scripts/verify_reference.py", str(tmp_path))
    assert code == 1 and "ERROR n2n_metrics_vectors.pt" in out


def test_benchmark_reports_the_n2n_row(tmp_path):
    code, out, err = run_cli("scripts/benchmark.py", "--archs", "N2NUNet", "--size", "64", "--train-size", "64",
                             "--train-batch", "1", "--runs", "1", "--warmup", "0", "--out", str(tmp_path))
    assert code == 0, err
    assert "| N2NUNet | 1,259,475 | 297,074 |" in out
    rows = json.load(open(tmp_path / "results.json"))["rows"]
    assert rows[0]["params"] == 1259475 and rows[0]["macs_per_pixel"] == pytest.approx(297074.25)
    assert rows[0]["inference_ms"] > 0 and rows[0]["train_step_ms"] > 0


@pytest.mark.slow
def test_quickstart_learns_at_least_3db(tmp_path):
    code, out, err = run_cli("train.py", "-opt", "options/train/quickstart.yml", "--set",
                             f"path.experiments_root={tmp_path}")
    assert code == 0, err
    m = re.search(r"PSNR ([\d.]+) dB \(noisy input ([\d.]+) dB\)", out.split("final validation:")[1])
    denoised, noisy = float(m.group(1)), float(m.group(2))
    print(f"quick start: noisy {noisy:.2f} dB -> denoised {denoised:.2f} dB (+{denoised - noisy:.2f} dB)")
    assert denoised - noisy >= 3.0
    assert os.path.exists(tmp_path / "quickstart" / "visualization" / "iter_00000600" / "quickstart" / "3096.png")


@pytest.mark.slow
@needs(os.path.join(DATA, "Kodak"))
def test_official_n2n_config_runs_on_the_shared_sets(tmp_path):
    d = lambda name: os.path.join(DATA, name)  # noqa: E731
    code, out, err = run_cli(
        "train.py", "-opt", "options/train/train_n2n_gauss25.yml", "--set", f"path.experiments_root={tmp_path}",
        f"datasets.train.root={d('BSD300_test')}", "datasets.train.num_workers=0", "datasets.train.crop_size=64",
        "train.total_iter=2", "val.val_freq=2", f"datasets.val.kodak.root={d('Kodak')}", "datasets.val.kodak.repeats=1",
        f"datasets.val.bsd300.root={d('BSD300_test')}", "datasets.val.bsd300.repeats=1",
        f"datasets.val.set14.root={d('Set14')}", "datasets.val.set14.repeats=1", "logger.use_tensorboard=false")
    assert code == 0, err
    for line in ("kodak [n2n_official, 24 images]", "bsd300 [n2n_official, 100 images]", "set14 [n2n_official, 12 images]"):
        assert line in out
    # sigma 25 noisy input scores about 20.2 dB on these sets under the n2n_official protocol
    noisy = [float(x) for x in re.findall(r"n2n_official, \d+ images\].*?noisy input ([\d.]+) dB", out)]
    assert all(19.5 < v < 21.5 for v in noisy), noisy


def test_prepare_n2n_imagenet_selects_sides_in_256_512(tmp_path):
    import numpy as np

    from conftest import write_png

    for name, (h, w) in {"a": (300, 400), "b": (200, 400), "c": (512, 256), "d": (600, 300)}.items():
        write_png(str(tmp_path / "src" / f"{name}.png"), np.zeros((h, w, 3), np.uint8))
    code, out, err = run_cli("scripts/prepare_n2n_imagenet.py", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "dst")) == ["a.jpg", "c.jpg"] and "2 images" in out
    code, out, _ = run_cli("scripts/prepare_n2n_imagenet.py", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert code == 0 and "2 images" in out  # restartable: existing outputs are kept
