"""Nothing overwritten or lost silently: run folders owned by one run, inputs kept, bad pixels and
full disks reported in one line."""
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from atbsn.errors import CheckpointError
from atbsn.train.checkpoint import atomic_save, load_file
from atbsn.train.loop import RunLock

from conftest import ROOT, run_cli, student_a_options, tiny_options, write_options, write_png


def _train_opts(tmp_path, image_folder, name="run", **train):
    opt = tiny_options(tmp_path, image_folder, name=name)
    opt["train"].update(train)
    return write_options(tmp_path / f"{name}.yml", opt)


def test_test_py_refuses_to_overwrite_its_inputs_or_merge_two_inputs(tmp_path, image_folder):
    path = write_options(tmp_path / "a.yml", student_a_options(tmp_path, image_folder, "a"))
    folder = tmp_path / "in"
    img = (np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8)
    write_png(str(folder / "x.png"), img)
    before = (folder / "x.png").read_bytes()
    code, out, err = run_cli("test.py", "-opt", path, "--input", str(folder), "--output", str(folder))
    assert code == 2 and "would replace the input" in err and "test.suffix" in err
    assert (folder / "x.png").read_bytes() == before
    code, out, err = run_cli("test.py", "-opt", path, "--input", str(folder), "--output", str(folder),
                             "--set", "test.suffix=_denoised")
    assert code == 0, err
    assert (folder / "x_denoised.png").exists() and (folder / "x.png").read_bytes() == before

    write_png(str(tmp_path / "two" / "a.png"), img)
    write_png(str(tmp_path / "two" / "a.tif"), img)
    code, out, err = run_cli("test.py", "-opt", path, "--input", str(tmp_path / "two"), "--output",
                             str(tmp_path / "out"))
    assert code == 2 and "would both be written to" in err and "a.tif" in err
    assert not os.listdir(tmp_path / "out")  # refused before anything is written


def test_a_run_that_fails_at_start_leaves_the_previous_run_alone(tmp_path, image_folder):
    path = _train_opts(tmp_path, image_folder, total_iter=2, save_freq=1)
    assert run_cli("train.py", "-opt", path)[0] == 0
    run = tmp_path / "experiments" / "run"
    weights = (run / "checkpoints" / "last.pth").read_bytes()
    code, out, err = run_cli("train.py", "-opt", path, "--set", "datasets.train.root=/missing")
    assert code == 2 and "/missing" in err
    assert (run / "checkpoints" / "last.pth").read_bytes() == weights
    assert not [p for p in os.listdir(tmp_path / "experiments") if "archived" in p]

    for p in (run / "checkpoints").glob("*.pth"):
        p.write_bytes(b"damaged")
    code, out, err = run_cli("train.py", "-opt", path, "--auto_resume")
    assert code == 2 and "none of the" in err and "can be read" in err


def test_one_run_folder_one_process(tmp_path, image_folder):
    path = _train_opts(tmp_path, image_folder, total_iter=1)
    lock = RunLock(str(tmp_path / "experiments" / "run"), "run folder")  # another run holds it
    try:
        code, out, err = run_cli("train.py", "-opt", path)
        assert code == 2 and f"in use by another process (PID {os.getpid()})" in err
        assert not [p for p in os.listdir(tmp_path / "experiments") if "archived" in p]
        vopt = tiny_options(tmp_path, image_folder, name="val")
        vopt["path"]["pretrain_network"] = "unused.pth"
        vlock = RunLock(str(tmp_path / "results" / "val"), "results folder")
        code, out, err = run_cli("valid.py", "-opt", write_options(tmp_path / "v.yml", vopt))
        assert code == 2 and "results folder" in err and "in use" in err
        vlock.release()
    finally:
        lock.release()
    assert run_cli("train.py", "-opt", path)[0] == 0


@pytest.mark.parametrize("name", ["../../victim", "a/b", ".."])
def test_run_names_are_one_folder_name(tmp_path, image_folder, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    path = _train_opts(tmp_path, image_folder, total_iter=1)
    code, out, err = run_cli("train.py", "-opt", path, "--set", f"name={name}")
    assert code == 2 and "must be a single folder name" in err
    assert (victim / "keep.txt").read_text() == "mine" and os.listdir(tmp_path) .count("victim") == 1


def test_non_finite_input_is_an_error_in_test_py(tmp_path, image_folder):
    import cv2

    path = write_options(tmp_path / "a.yml", student_a_options(tmp_path, image_folder, "a"))
    img = np.full((64, 64, 3), 0.5, np.float32)
    img[5:15, 5:15] = np.nan
    (tmp_path / "in").mkdir()
    assert cv2.imwrite(str(tmp_path / "in" / "nan.tif"), img)
    code, out, err = run_cli("test.py", "-opt", path, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"))
    assert code == 2 and "nan.tif' has 300 non-finite sample(s)" in err


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    atomic_save({"iteration": 1}, path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous 'last.pth' is kept"):
        atomic_save({"iteration": 2}, path)
    monkeypatch.undo()
    assert load_file(path)["iteration"] == 1 and os.listdir(tmp_path) == ["last.pth"]


def test_valid_py_names_an_image_smaller_than_the_ssim_window(tmp_path, image_folder):
    for sub in ("noisy", "clean"):
        write_png(str(tmp_path / "tiny" / sub / "t.png"), np.zeros((8, 8, 3), np.uint8))
    opt = student_a_options(tmp_path, image_folder, "tiny")
    opt["datasets"]["val"] = {"small": {"type": "PairedFolderDataset", "noisy_root": str(tmp_path / "tiny" / "noisy"),
                                        "clean_root": str(tmp_path / "tiny" / "clean")}}
    code, out, err = run_cli("valid.py", "-opt", write_options(tmp_path / "t.yml", opt))
    assert code == 2 and "image 't' (8x8)" in err and "at least 11x11" in err


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, image_folder):
    path = _train_opts(tmp_path, image_folder, total_iter=1)
    ckpts = tmp_path / "experiments" / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ckpts / f"last.pth.tmp.{int(dead.stdout)}"
    stale.write_bytes(b"half")
    (ckpts / f"last.pth.tmp.{os.getpid()}").write_bytes(b"a live writer's")
    code, out, err = run_cli("train.py", "-opt", path, "--auto_resume")
    assert code == 0, err
    assert not stale.exists() and (ckpts / f"last.pth.tmp.{os.getpid()}").exists() and (ckpts / "last.pth").exists()
    assert f"removed {stale}" in open(tmp_path / "experiments" / "run" / "train.log").read()


def test_untiled_images_over_the_memory_limit_are_tiled(capsys):
    from atbsn.archs import ATBSNStudentA
    from atbsn.inference import activation_bytes_per_pixel, denoise
    from atbsn.models import Neighbor2Neighbor

    torch.manual_seed(0)
    model = Neighbor2Neighbor({"net": ATBSNStudentA()})
    model.train(False)
    x = torch.rand(1, 3, 300, 420)
    need = activation_bytes_per_pixel(model) * 300 * 420 / 2**30
    whole = denoise(model, x, memory_limit_gb=need * 2)
    assert "tiles" not in capsys.readouterr().out
    tiled = denoise(model, x, memory_limit_gb=need / 4)
    assert "needs about" in capsys.readouterr().out
    assert (tiled - whole).abs().max().item() < 1e-4  # exact tiles (overlap covers the receptive field)


@pytest.mark.slow
def test_random_kills_resume_to_bit_identical_weights(tmp_path, image_folder):
    """SIGKILL at random moments (mid-checkpoint-write included) ten times, then finish."""
    total = 300
    ref = _train_opts(tmp_path, image_folder, name="straight", total_iter=total, save_freq=1, keep_checkpoints=2)
    assert run_cli("train.py", "-opt", ref)[0] == 0
    path = _train_opts(tmp_path, image_folder, name="killed", total_iter=total, save_freq=1, keep_checkpoints=2)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2")
    rng, kills = random.Random(0), 0
    while kills < 10:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "-opt", path, "--auto_resume"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(2.5, 6.0))
            break  # finished before the kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills == 10, f"the run finished after {kills} kills; lengthen it"
    code, out, err = run_cli("train.py", "-opt", path, "--auto_resume")
    assert code == 0, err
    a = load_file(str(tmp_path / "experiments" / "straight" / "checkpoints" / "last.pth"))["networks"]["net"]
    b = load_file(str(tmp_path / "experiments" / "killed" / "checkpoints" / "last.pth"))["networks"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "experiments" / "killed" / "checkpoints").glob("*.tmp.*"))
