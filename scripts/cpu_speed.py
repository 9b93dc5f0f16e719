#!/usr/bin/env python
"""How close the AT-BSN teacher runs to the machine's conv peak, and what train.py's allocator
setting is worth per training step.

    python scripts/cpu_speed.py                      # about 4 minutes on 2 cores
    python scripts/cpu_speed.py --size 512 --runs 5

1. Throughput: the teacher's inference forward (hole size 3, channels_last, the path valid.py /
   test.py take on a CPU) in GFLOP/s of its own convolutions, against a 96->96 3x3 conv on an
   input of the same size and layout (the teacher's dominant layer shape), both in one process
   (interleaved, median of ``--runs``).
2. Training steps (forward, backward, Adam) of the recipes' and papers' shapes, each in two fresh
   processes: glibc's default allocator (``ATBSN_MALLOC=system``) and train.py's
   ``keep_freed_memory``; median of ``--runs`` after one warm-up step.

Writes JSON and a markdown table into ``results/cpu_speed/`` (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = {  # name: (what, arch options, batch, crop)
    "recipe_teacher": ("AT-BSN teacher, noisy-folder recipe (width 24, k = 9)", {"mid_channels": 24}, 8, 64),
    "paper_teacher": ("AT-BSN teacher, paper width 48 (k = 9)", {}, 4, 128),
    "recipe_distill": ("AT-BSN distillation into student A (7 hole sizes, width-24 teacher)", {"mid_channels": 24}, 8, 64),
    "n2n": ("Neighbor2Neighbor U-Net (sampler, 2 passes)", {}, 4, 256),
}


def _median_time(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def throughput(size: int, runs: int) -> dict:
    import torch

    from atbsn.archs import ATBSN
    from atbsn.utils.profiling import count_macs

    torch.manual_seed(0)
    cl = torch.channels_last
    net = ATBSN().eval().to(memory_format=cl)
    x = (torch.rand(1, 3, size, size) * 255).contiguous(memory_format=cl)
    conv = torch.nn.Conv2d(96, 96, 3, padding=1).to(memory_format=cl)
    f = torch.rand(1, 96, size, size).contiguous(memory_format=cl)
    macs = count_macs(net, x, lambda n, inp: n(inp, hole_size=3))
    with torch.no_grad():
        net(x, hole_size=3), conv(f)
        t_net, t_conv = [], []
        for _ in range(runs):  # interleaved: both see the same machine state
            for fn, store in ((lambda: net(x, hole_size=3), t_net), (lambda: conv(f), t_conv)):
                t = time.perf_counter()
                fn()
                store.append(time.perf_counter() - t)
    net_gflops = 2 * macs / statistics.median(t_net) / 1e9
    conv_gflops = 2 * 96 * 96 * 9 * size * size / statistics.median(t_conv) / 1e9
    return {"size": size, "teacher_ms": statistics.median(t_net) * 1e3, "teacher_gflops": net_gflops,
            "conv_gflops": conv_gflops, "fraction_of_peak": net_gflops / conv_gflops}


def train_step(name: str, runs: int) -> dict:
    import torch
    import torch.nn.functional as F

    from atbsn.archs import ATBSN, ATBSNStudentA, N2NUNet
    from atbsn.models import ATBSNDistillation, Neighbor2Neighbor, Progress
    from atbsn.utils.allocator import keep_freed_memory

    kept = os.environ.get("ATBSN_MALLOC", "") != "system" and keep_freed_memory()
    what, arch, batch, crop = STEPS[name]
    torch.manual_seed(0)
    x = torch.rand(batch, 3, crop, crop)
    if name.endswith("teacher"):
        net = ATBSN(**arch)
        params, loss = net.parameters(), lambda: F.l1_loss(net(x * 255, hole_size=9), x * 255)
    elif name == "recipe_distill":
        student = ATBSNStudentA()
        model = ATBSNDistillation({"teacher": ATBSN(**arch), "student": student}, init_student_from_teacher=False)
        model.train(True)
        params, loss = student.parameters(), lambda: model.training_step({"noisy": x}, Progress(0, 1, 0, 1))["loss"]
    else:
        net = N2NUNet()
        model = Neighbor2Neighbor({"net": net})
        model.train(True)
        params, loss = net.parameters(), lambda: model.training_step({"noisy": x}, Progress(50, 100, 50, 1))["loss"]
    opt = torch.optim.Adam(params, 1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return {"step": name, "what": what, "batch": batch, "crop": crop, "kept_freed_memory": kept,
            "step_ms": _median_time(step, runs) * 1e3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="throughput input side (default 1024: one megapixel)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", nargs="*", default=list(STEPS), help=f"training steps to time ({', '.join(STEPS)})")
    p.add_argument("--out", default=os.path.join("results", "cpu_speed"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(throughput(args.size, args.runs) if args.worker == "throughput"
                         else train_step(args.worker, args.runs)))
        return 0

    import torch

    def worker(name, malloc=""):
        env = {**os.environ, "ATBSN_MALLOC": malloc}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--size", str(args.size),
               "--runs", str(args.runs)]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{name}: failed\n{out.stderr}")
        print(f"{name} {malloc or 'keep_freed_memory'}: {time.perf_counter() - t:.1f} s", flush=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = {"machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "throughput": worker("throughput", "system"),
              "steps": [(worker(s, "system"), worker(s)) for s in args.steps]}
    from atbsn.train.loop import git_revision

    t = result["throughput"]
    lines = [f"Command: `{result['command']}` at revision {git_revision()}; torch {result['machine']['torch']}, "
             f"{result['machine']['threads']} threads", "",
             f"Teacher inference at {t['size']}², channels_last: {t['teacher_ms']:.0f} ms, {t['teacher_gflops']:.0f} "
             f"GFLOP/s = {100 * t['fraction_of_peak']:.0f}% of a 96->96 3x3 conv at the same size and layout "
             f"({t['conv_gflops']:.0f} GFLOP/s)", "",
             "| training step | batch | glibc default ms | keep_freed_memory ms (train.py) | speed-up |",
             "|---|---|---:|---:|---:|"]
    for system, kept in result["steps"]:
        lines.append(f"| {system['what']} | {system['batch']}x{system['crop']}² | {system['step_ms']:.0f} | "
                     f"{kept['step_ms']:.0f} | {system['step_ms'] / kept['step_ms']:.2f}x |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
