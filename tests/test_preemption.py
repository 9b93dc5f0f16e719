"""Preemption: SIGTERM / SIGINT / SIGUSR1 save a checkpoint at the current iteration and exit 75;
``--auto_resume`` then ends bit-identical to an uninterrupted run. Impossible option values are
option errors naming the key and the allowed range."""
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from atbsn.train.checkpoint import load_file
from atbsn.train.preemption import PREEMPTED_EXIT_CODE

from conftest import ROOT, run_cli, tiny_options, write_options


def _opts(tmp_path, image_folder, name, **train):
    opt = tiny_options(tmp_path, image_folder, name=name)
    opt["train"].update(train)
    opt["val"]["val_freq"] = 1000
    return write_options(tmp_path / f"{name}.yml", opt)


def _weights(tmp_path, name):
    return load_file(str(tmp_path / "experiments" / name / "checkpoints" / "last.pth"))


def _log_iterations(log_path):
    """The iterations train.log has reported so far (print_freq 1)."""
    if not os.path.exists(log_path):
        return 0
    lines = [line for line in open(log_path).read().splitlines() if " INFO: iter " in line]
    return int(lines[-1].split(" INFO: iter ")[1].split("/")[0]) if lines else 0


def _signal_at(tmp_path, path, name, sig, at_iteration, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2", **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "-opt", path], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "experiments" / name / "train.log"
    deadline = time.time() + 300
    while _log_iterations(log) < at_iteration and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_iteration_and_resume_is_bit_identical(tmp_path, image_folder, sig):
    total = 40
    ref = _opts(tmp_path, image_folder, "straight", total_iter=total, save_freq=1000)
    assert run_cli("train.py", "-opt", ref)[0] == 0
    path = _opts(tmp_path, image_folder, "stopped", total_iter=total, save_freq=1000)
    at = random.Random(int(sig)).randint(5, 25)
    code, out, err = _signal_at(tmp_path, path, "stopped", sig, at)
    assert code == PREEMPTED_EXIT_CODE, err
    stopped = _weights(tmp_path, "stopped")
    assert at <= stopped["iteration"] < total  # the step in flight finished, then the checkpoint
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and signal.Signals(sig).name in message[0] and "--auto_resume" in message[0]
    assert "Traceback" not in err
    code, out, err = run_cli("train.py", "-opt", path, "--auto_resume")
    assert code == 0, err
    a, b = _weights(tmp_path, "straight"), _weights(tmp_path, "stopped")
    assert b["iteration"] == total
    assert all(torch.equal(a["networks"]["net"][k], b["networks"]["net"][k]) for k in a["networks"]["net"])


def test_sigusr1_requeues_on_slurm_when_asked(tmp_path, image_folder):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol_args"
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {record}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    opt = tiny_options(tmp_path, image_folder, name="slurm")
    opt["train"].update(total_iter=40, save_freq=1000)
    opt["dist"] = {"slurm_requeue": True}
    path = write_options(tmp_path / "slurm.yml", opt)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    code, out, err = _signal_at(tmp_path, path, "slurm", signal.SIGUSR1, 5, env)
    assert code == PREEMPTED_EXIT_CODE, err
    assert record.read_text().split() == ["requeue", "4242"]
    log = open(tmp_path / "experiments" / "slurm" / "train.log").read()
    assert "SIGUSR1 received" in log and "requeued SLURM job 4242" in log


def test_a_second_signal_during_the_save_changes_nothing(tmp_path, image_folder, monkeypatch):
    """The handler only records: a signal that arrives while the checkpoint is written is ignored."""
    from atbsn.train import preemption

    before = signal.getsignal(signal.SIGINT)  # Python's default; SIG_IGN where the suite runs as a background job
    stop = preemption.StopOnSignal()
    with stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # would be KeyboardInterrupt without the handler
        time.sleep(0.01)
    assert stop.signum == signal.SIGTERM and stop.requested(False, torch.device("cpu"))
    assert signal.getsignal(signal.SIGINT) is before  # restored


BAD_VALUES = [
    ("train.total_iter=-5", "train.total_iter", "an integer >= 1"),
    ("datasets.train.batch_size=0", "datasets.train.batch_size", "an integer >= 1"),
    ("train.optimizer.lr=.nan", "train.optimizer.lr", "a finite number > 0"),
    ("train.optimizer.lr=0", "train.optimizer.lr", "a finite number > 0"),
    ("train.optimizer.lr=.inf", "train.optimizer.lr", "a finite number > 0"),
    ("train.optimizer.betas=[0.9,1.5]", "train.optimizer.betas", "in [0, 1]"),
    ("train.optimizer.weight_decay=-1", "train.optimizer.weight_decay", ">= 0"),
    ("train.optimizer.eps=0", "train.optimizer.eps", "> 0"),
    ("train.save_freq=0", "train.save_freq", "an integer >= 1"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints", "an integer >= 1"),
    ("train.grad_clip=-1", "train.grad_clip", "> 0"),
    ("train.scheduler.eta_min=-0.1", "train.scheduler.eta_min", ">= 0"),
    ("val.val_freq=0", "val.val_freq", "an integer >= 1"),
    ("logger.print_freq=0", "logger.print_freq", "an integer >= 1"),
    ("datasets.train.num_workers=-1", "datasets.train.num_workers", "an integer >= 0"),
    ("datasets.train.repeat=0", "datasets.train.repeat", "an integer >= 1"),
    ("datasets.train.crop_size=0", "datasets.train.crop_size", "an integer >= 1"),
    ("val.tile.size=0", "val.tile.size", "an integer >= 1"),
    ("val.tile.overlap=-4", "val.tile.overlap", "an integer >= 0"),
    ("val.tile.memory_limit_gb=0", "val.tile.memory_limit_gb", "> 0"),
    ("val.strength.window=0", "val.strength.window", "an integer >= 1"),
    ("dist.timeout_s=0", "dist.timeout_s", "an integer >= 1"),
]


@pytest.mark.parametrize("override,key,allowed", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_impossible_values_are_one_line_option_errors(tmp_path, image_folder, override, key, allowed):
    from atbsn.errors import OptionsError
    from atbsn.options import load_options

    path = _opts(tmp_path, image_folder, "bad")
    with pytest.raises(OptionsError) as err:
        load_options(path, [override])
    msg = str(err.value)
    assert f"'{key}'" in msg and allowed in msg and "\n" not in msg, msg


def test_impossible_values_through_the_cli(tmp_path, image_folder):
    """The issue's three cases as a user types them: one line, rc 2, nothing trained."""
    path = _opts(tmp_path, image_folder, "bad")
    for override in ("train.total_iter=-5", "datasets.train.batch_size=0", "train.optimizer.lr=.nan"):
        code, out, err = run_cli("train.py", "-opt", path, "--set", override)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert override.split("=")[0] in err
    assert not (tmp_path / "experiments" / "bad").exists()


def test_ignored_stop_signals_let_the_error_message_out_before_a_torchrun_worker_ends():
    # after a lost peer, torchrun's SIGTERM must not cut the line that names the lost rank
    code = ("import os, signal, sys\n"
            "import torch\n"
            "from atbsn.train.preemption import StopOnSignal\n"
            "torch.ones(1 << 20).sum()  # worker threads exist, as in training\n"
            "with StopOnSignal() as stop:\n"
            "    stop.ignore_after_exit_in_torchrun_worker()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('error: rank 0: lost rank 1', file=sys.stderr)\n"
            "sys.exit(1)\n")
    env = dict(os.environ, PYTHONPATH=ROOT, TORCHELASTIC_RUN_ID="test")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip() == "error: rank 0: lost rank 1"
