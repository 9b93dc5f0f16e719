"""Every command of the README's quick start and "Train, resume, validate, test" runs as written,
in a scratch folder, with training cut to a few iterations (the full quick start is a slow test)."""
import os
import re
import shlex

import pytest
import torch

from atbsn.utils.image import read_image

from conftest import ROOT, run_cli

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
SHORT = ["train.total_iter=6", "train.save_freq=3", "val.val_freq=6", "logger.print_freq=2"]


def bash_blocks(after: str):
    """The ```bash blocks of the README section whose heading (or first line) starts with ``after``."""
    start = README.index(after)
    end = README.find("\n## ", start + len(after))
    section = README[start:end if end > 0 else None]
    return [b for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def commands(block: str):
    out = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("python ") and not part.startswith("python -m"):
                out.append(shlex.split(part)[1:])
    return out


def shortened(args):
    """The same command with the run cut to SHORT (appended, so it wins over the README's values)."""
    if args[0] != "train.py":
        return args
    return args + SHORT if "--set" in args else args + ["--set", *SHORT]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A user's checkout: options/ and datasets/ as in the repository, experiments/ and results/ new."""
    d = tmp_path_factory.mktemp("readme")
    for name in ("options", "datasets"):
        os.symlink(os.path.join(ROOT, name), d / name)
    return d


def test_readme_install_puts_torch_first():
    quick = bash_blocks("## Quick start")[0].splitlines()
    assert quick[0].startswith("pip install torch==") and "requirements.txt" in quick[1]
    assert commands(bash_blocks("## Quick start")[0]) == [["train.py", "-opt", "options/train/quickstart.yml"]]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert ci.index("torch==2.13.0") < ci.index("-r requirements.txt")


def test_quick_start_then_every_train_resume_validate_test_command(scratch):
    (train,) = commands(bash_blocks("## Quick start")[0])
    code, out, err = run_cli(*shortened(train), cwd=scratch)
    assert code == 0, err
    run = scratch / "experiments" / "quickstart"
    assert (run / "checkpoints" / "last.pth").exists()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tb"))  # TensorBoard is on

    block = bash_blocks("## Train, resume, validate, test")[0]
    runnable = commands(block)
    assert [c[0] for c in runnable] == ["valid.py", "test.py", "train.py", "train.py"]
    outputs = {}
    for args in runnable:
        code, out, err = run_cli(*shortened(args), cwd=scratch)
        assert code == 0, (args, err)
        outputs[" ".join(args[:4])] = out
    valid = outputs["valid.py -opt options/test/quickstart.yml"]
    m = re.search(r"quickstart \[basicsr_rgb, 2 images\]  PSNR ([\d.]+) dB \(noisy input ([\d.]+) dB\)", valid)
    assert m and float(m.group(2)) == pytest.approx(20.27, abs=0.01), valid  # the README's noisy input
    assert (scratch / "results" / "quickstart_test" / "metrics.csv").exists()
    for name in ("3096", "42049"):
        img, depth = read_image(str(scratch / "results" / "quickstart_denoised" / f"{name}.png"))
        assert img.shape == (321, 481, 3) and depth == 8
    assert "resumed from" in open(run / "train.log").read()
    long_run = torch.load(scratch / "experiments" / "quickstart_long" / "checkpoints" / "last.pth", weights_only=True)
    assert long_run["scheduler"]["T_max"] == 6 == long_run["iteration"]  # the cosine followed total_iter


def test_the_templates_name_what_they_need():
    block = bash_blocks("## Train, resume, validate, test")[1]
    for line in block.strip().splitlines():
        assert "needs" in line or "--input noisy_dir" in line, line
