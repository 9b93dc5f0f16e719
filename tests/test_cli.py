"""The entry points exactly as a user runs them: exit codes, one-line errors, files written."""
import json
import os

import numpy as np
import pytest
import torch
import yaml

from atbsn.utils.image import read_image

from conftest import ROOT, run_cli, tiny_options, write_options, write_png


@pytest.fixture
def trained(tmp_path, image_folder):
    """A tiny model trained through train.py (shared by the valid/test checks of one test)."""
    opt = tiny_options(tmp_path, image_folder, name="cli")
    opt["train"]["total_iter"] = 2
    path = write_options(tmp_path / "train.yml", opt)
    code, out, err = run_cli("train.py", "-opt", path, "--set", "val.val_freq=2", "logger.print_freq=1")
    assert code == 0, err
    assert "final validation:" in out and "PSNR" in out
    ckpt = tmp_path / "experiments" / "cli" / "checkpoints" / "last.pth"
    assert ckpt.exists()
    return opt, str(ckpt)


def test_train_auto_resume_valid_and_test(tmp_path, trained):
    opt, ckpt = trained
    # --auto_resume continues the same run (custom experiments_root) to a longer schedule
    path = write_options(tmp_path / "train.yml", opt)
    code, out, err = run_cli("train.py", "-opt", path, "--auto_resume", "--set", "train.total_iter=3")
    assert code == 0, err
    log = open(tmp_path / "experiments" / "cli" / "train.log").read()
    assert "resumed from" in log and "at iteration 2" in log and "iter 3/3" in log

    vopt = dict(opt, path={**opt["path"], "pretrain_network": ckpt})
    vpath = write_options(tmp_path / "valid.yml", vopt)
    code, out, err = run_cli("valid.py", "-opt", vpath)
    assert code == 0, err
    assert "set [basicsr_rgb, 6 images]" in out
    summary = json.load(open(tmp_path / "results" / "cli" / "summary.json"))
    assert summary["summary"]["set"]["basicsr_rgb"]["count"] == 6
    assert summary["protocols"][0]["protocol"] == "basicsr_rgb"
    rows = open(tmp_path / "results" / "cli" / "metrics.csv").read().splitlines()
    assert rows[0].startswith("dataset,image,protocol,psnr,ssim,input_psnr") and len(rows) == 7

    # test.py: any size in, same size PNG out, 16-bit input -> 16-bit output
    odd = (np.random.RandomState(0).rand(45, 70, 3) * 255).astype(np.uint8)
    write_png(str(tmp_path / "in" / "odd.png"), odd)
    write_png(str(tmp_path / "in" / "deep.png"), (np.random.RandomState(1).rand(33, 40, 3) * 65535).astype(np.uint16))
    code, out, err = run_cli("test.py", "-opt", vpath, "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--set", "val.tile.size=64", "val.tile.overlap=32")
    assert code == 0, err
    img, depth = read_image(str(tmp_path / "out" / "odd.png"))
    assert img.shape == (45, 70, 3) and depth == 8
    img, depth = read_image(str(tmp_path / "out" / "deep.png"))
    assert img.shape == (33, 40, 3) and depth == 16
    assert "denoised 2 image(s)" in out


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_bad_inputs_give_one_clear_error(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder, name="bad")
    bad = tmp_path / "malformed.yml"
    bad.write_text("name: [unclosed\n")
    _one_line_error(*run_cli("train.py", "-opt", str(bad))[::2], "malformed.yml", "malformed YAML", "line")

    o = yaml.safe_load(yaml.safe_dump(opt))
    o["networks"]["net"]["type"] = "UNetN2N"
    _one_line_error(*run_cli("train.py", "-opt", write_options(tmp_path / "t.yml", o))[::2], "unknown arch 'UNetN2N'")

    o = yaml.safe_load(yaml.safe_dump(opt))
    o["datasets"]["train"]["root"] = str(tmp_path / "missing")
    _one_line_error(*run_cli("train.py", "-opt", write_options(tmp_path / "t.yml", o))[::2], "missing", "not found")

    o = yaml.safe_load(yaml.safe_dump(opt))
    o["datasets"]["train"]["crop_size"] = 256  # larger than the 128x96 images; raised inside the loader
    _one_line_error(*run_cli("train.py", "-opt", write_options(tmp_path / "t.yml", o))[::2], "smaller than the crop size 256")

    code, _, err = run_cli("train.py", "-opt", str(tmp_path / "nope.yml"))
    _one_line_error(code, err, "options file not found")

    code, _, err = run_cli("train.py", "-opt", write_options(tmp_path / "t.yml", opt), "--set", "train.total_iter=x")
    _one_line_error(code, err, "'train.total_iter' must be an integer >= 1 | null")

    # a role set to null (no weights at all) is named as the option to set, not a traceback
    code, _, err = run_cli("test.py", "-opt", os.path.join(ROOT, "options/test/noisy_folder.yml"), "--input",
                           opt["datasets"]["train"]["root"], "--output", str(tmp_path / "o"), "--set", "path.pretrain_network.student=null")
    _one_line_error(code, err, "set 'path.pretrain_network' to the weights")


def test_wrong_checkpoint_and_unwritable_output(tmp_path, trained):
    opt, ckpt = trained
    o = dict(opt, path={**opt["path"], "pretrain_network": ckpt})
    o["networks"] = {"net": {"type": "N2NUNet", "n_feature": 16}}
    code, _, err = run_cli("valid.py", "-opt", write_options(tmp_path / "v.yml", o))
    # issue 13: the option that differs, not the list of mis-shaped tensors
    _one_line_error(code, err, "does not fit N2NUNet", "networks.net.n_feature: checkpoint 8, config 16")

    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(open(ckpt, "rb").read()[:1000])
    o = dict(opt, path={**opt["path"], "pretrain_network": str(truncated)})
    code, _, err = run_cli("valid.py", "-opt", write_options(tmp_path / "v.yml", o))
    _one_line_error(code, err, "cannot read checkpoint", "trunc.pth")

    o = dict(opt, path={**opt["path"], "pretrain_network": ckpt})
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli("test.py", "-opt", write_options(tmp_path / "v.yml", o), "--input",
                           str(tmp_path / "clean" / "img0.png"), "--output", str(blocker / "out"))
    _one_line_error(code, err, "cannot create output folder")
    corrupt = tmp_path / "c.png"
    corrupt.write_bytes(b"garbage")
    code, _, err = run_cli("test.py", "-opt", write_options(tmp_path / "v.yml", o), "--input", str(corrupt),
                           "--output", str(tmp_path / "o2"))
    _one_line_error(code, err, "c.png", "corrupt")


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, atbsn, atbsn.archs, atbsn.models, atbsn.data, atbsn.metrics, atbsn.options, atbsn.inference;"
            "bad=[m for m in ('torchvision','tensorboard','torch.utils.tensorboard','cv2') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", "import sys, atbsn; print('torch' in sys.modules)"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.stdout.strip() == "False"


def test_a_checkpoint_of_other_widths_names_the_option_that_differs(tmp_path):
    from atbsn.archs import N2NUNet
    from atbsn.errors import CheckpointError
    from atbsn.weights import load_pretrained
    from atbsn.models import build_model
    from atbsn.options import load_options

    opt = load_options(os.path.join(ROOT, "options", "test", "quickstart.yml"), ["networks.net.n_feature=48"])
    trained = {"type": "N2NUNet", "n_feature": 32, "init_scale": 1.0}
    torch.save({"networks": {"net": N2NUNet(n_feature=32).state_dict()}, "options": {"networks": {"net": trained}}},
               tmp_path / "last.pth")
    model = build_model(opt)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(model, str(tmp_path / "last.pth"), True, opt["networks"])
    msg = str(err.value)
    assert "networks.net.n_feature: checkpoint 32, config 48" in msg and "shape" not in msg
    assert msg.count("networks.net.") == 1  # init_scale agrees, the defaults fill in_channels/out_channels


def test_a_set_typo_is_reported_against_set_not_the_file():
    from atbsn.errors import OptionsError
    from atbsn.options import load_options

    path = os.path.join(ROOT, "options", "train", "quickstart.yml")
    with pytest.raises(OptionsError) as err:
        load_options(path, ["train.total_iter=10", "train.total_itr=5"])
    assert str(err.value).startswith("--set train.total_itr=5: unknown key 'train.total_itr'; did you mean 'total_iter'")
    with pytest.raises(OptionsError) as err:  # a fault of the file itself still names the file
        load_options(os.path.join(ROOT, "tests", "data", "missing.yml"))
    assert "missing.yml" in str(err.value)


def test_console_scripts_print_their_own_names():
    import subprocess
    import sys

    for script, entry in (("atbsn-train", "train_main"), ("atbsn-valid", "valid_main"), ("atbsn-test", "test_main")):
        code = f"import sys; sys.argv[0] = '/usr/bin/{script}'; from atbsn.cli import {entry}; sys.exit({entry}(['--help']))"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert p.returncode == 0 and p.stdout.startswith(f"usage: {script} "), p.stdout
    code, out, _ = run_cli("train.py", "--help")
    assert out.startswith("usage: train.py ")
