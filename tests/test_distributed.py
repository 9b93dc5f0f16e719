"""torch.distributed for real: torchrun, 2 CPU processes, gloo, on localhost."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from atbsn.train.checkpoint import load_file

from conftest import ROOT, tiny_options, write_options


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def torchrun(script, *args, nproc=2, extra=(), timeout=600, wait=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc_per_node={nproc}",
           os.path.join(ROOT, script), *args, "--launcher", "pytorch"]
    if not extra:
        cmd[3:3] = ["--standalone"]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def single(script, *args):
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def _opt(tmp_path, image_folder, name, **train):
    opt = tiny_options(tmp_path, image_folder, name=name)
    opt["train"].update(train)
    opt["val"]["val_freq"] = 100
    opt["dist"] = {"timeout_s": 60}
    return write_options(tmp_path / f"{name}.yml", opt)


def _weights(tmp_path, name):
    return load_file(str(tmp_path / "experiments" / name / "checkpoints" / "last.pth"))["networks"]["net"]


def _log_tail(tmp_path, name, lines=15):
    log = tmp_path / "experiments" / name / "train.log"
    return "\ntrain.log:\n" + "".join(open(log).readlines()[-lines:]) if log.exists() else "\nno train.log"


def _max_rel(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, image_folder):
    code, _, err = single("train.py", "-opt", _opt(tmp_path, image_folder, "one", total_iter=4))
    assert code == 0, err
    code, out, err = torchrun("train.py", "-opt", _opt(tmp_path, image_folder, "two", total_iter=4))
    assert code == 0, out + err
    rel = _max_rel(_weights(tmp_path, "two"), _weights(tmp_path, "one"))
    print(f"single vs 2-process max relative weight difference: {rel:.3e}")
    assert rel <= 1e-5
    log = open(tmp_path / "experiments" / "two" / "train.log").read()
    assert log.count("training two for 4 iterations") == 1  # rank 0 alone writes the log
    # the workers end with os._exit (atbsn.dist.end_finished_worker): what they print and log is flushed first
    assert out.count("final validation:") == 1 and log.rstrip().splitlines()[-1].endswith(
        f"checkpoints in {tmp_path / 'experiments' / 'two' / 'checkpoints'}")


def test_killed_two_process_run_resumes_to_the_same_weights(tmp_path, image_folder):
    # long enough that the kill lands mid-run (8 iterations could end before the kill, nothing to resume)
    path = _opt(tmp_path, image_folder, "full", total_iter=40, save_freq=2, keep_checkpoints=30)
    code, out, err = torchrun("train.py", "-opt", path)
    # a worker aborted here once in CI and once locally ("terminate called without an active exception",
    # see atbsn.dist.end_finished_worker): on a failure, show how far the run got
    assert code == 0, out[-2000:] + err[-6000:] + _log_tail(tmp_path, "full")
    reference = _weights(tmp_path, "full")

    path = _opt(tmp_path, image_folder, "killed", total_iter=40, save_freq=2, keep_checkpoints=30)
    proc = torchrun("train.py", "-opt", path, wait=False)
    ckpt = tmp_path / "experiments" / "killed" / "checkpoints" / "iter_00000002.pth"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    code, out, err = torchrun("train.py", "-opt", path, "--auto_resume")
    assert code == 0, out + err
    assert "resumed from" in open(tmp_path / "experiments" / "killed" / "train.log").read()
    resumed = _weights(tmp_path, "killed")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_sharded_validation_equals_single_process(tmp_path, image_folder):
    assert single("train.py", "-opt", _opt(tmp_path, image_folder, "val", total_iter=1))[0] == 0
    opt = tiny_options(tmp_path, image_folder, name="val")
    opt["path"]["pretrain_network"] = str(tmp_path / "experiments" / "val" / "checkpoints" / "last.pth")
    opt["val"]["metrics"] = ["basicsr_rgb", "n2n_official"]
    results = {}
    for mode in ("single", "sharded"):
        opt["path"]["results_root"] = str(tmp_path / mode)
        path = write_options(tmp_path / f"valid_{mode}.yml", opt)
        code, out, err = single("valid.py", "-opt", path) if mode == "single" else torchrun("valid.py", "-opt", path)
        assert code == 0, out + err
        results[mode] = json.load(open(tmp_path / mode / "val" / "summary.json"))["summary"]
        csv = open(tmp_path / mode / "val" / "metrics.csv").read()
        results[mode + "_csv"] = csv
    assert results["single"] == results["sharded"]
    assert results["single_csv"] == results["sharded_csv"]


def test_two_nodes_rendezvous_on_localhost(tmp_path, image_folder):
    path = _opt(tmp_path, image_folder, "nodes", total_iter=2)
    port = _free_port()
    common = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=test"]
    procs = [torchrun("train.py", "-opt", path, nproc=1, extra=common + [f"--node-rank={r}"], wait=False)
             for r in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert (tmp_path / "experiments" / "nodes" / "checkpoints" / "last.pth").exists()


def test_one_failing_rank_ends_the_whole_job(tmp_path, image_folder):
    (image_folder / "clean" / "img5.png").write_bytes(b"corrupt")  # whichever rank draws it raises
    path = _opt(tmp_path, image_folder, "fail", total_iter=50)
    t0 = time.time()
    code, out, err = torchrun("train.py", "-opt", path, timeout=300)
    assert code != 0
    assert time.time() - t0 < 180
    assert "img5.png" in out + err


def test_launcher_pytorch_without_torchrun_environment_is_a_clear_error(tmp_path, image_folder):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "-opt", _opt(tmp_path, image_folder, "x"),
                        "--launcher", "pytorch"], cwd=ROOT, env=dict(env, PYTHONPATH=ROOT), capture_output=True,
                       text=True)
    assert p.returncode == 2 and "needs the environment that torchrun sets" in p.stderr


def _worker_of_rank(parent_pid: int, rank: int) -> int:
    """The PID of the torchrun worker (a descendant of ``parent_pid``) whose RANK is ``rank``."""
    parents, envs = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
            envs[int(pid)] = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
    for pid, env in envs.items():
        if f"RANK={rank}".encode() in env and any(e.startswith(b"LOCAL_RANK=") for e in env):
            p = pid
            while p in parents and p > 1:
                p = parents[p]
                if p == parent_pid:
                    return pid
    raise AssertionError(f"no worker of rank {rank} found under pid {parent_pid}")


@pytest.mark.slow
def test_one_killed_rank_stops_the_other_naming_it_and_resume_is_exact(tmp_path, image_folder):
    # long enough that rank 1 is still training when the iteration-10 checkpoint appears
    path = _opt(tmp_path, image_folder, "whole", total_iter=150, save_freq=5, keep_checkpoints=40)
    assert torchrun("train.py", "-opt", path)[0] == 0
    reference = _weights(tmp_path, "whole")

    path = _opt(tmp_path, image_folder, "lost", total_iter=150, save_freq=5, keep_checkpoints=40)
    proc = torchrun("train.py", "-opt", path, wait=False)
    ckpt = tmp_path / "experiments" / "lost" / "checkpoints" / "iter_00000010.pth"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert ckpt.exists() and proc.poll() is None
    os.kill(_worker_of_rank(proc.pid, 1), signal.SIGKILL)
    t0 = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - t0 < 60  # dist.timeout_s is 60
    lines = [line for line in (out + err).splitlines() if line.startswith("error: rank 0: lost rank 1")]
    assert len(lines) == 1, out + err
    code, out, err = torchrun("train.py", "-opt", path, "--auto_resume")
    assert code == 0, out + err
    resumed = _weights(tmp_path, "lost")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
