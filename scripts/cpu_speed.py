#!/usr/bin/env python
"""How close the networks run to the machine's conv peak, what train.py's allocator setting is
worth per training step, and where a 12-MP photo's time goes in test.py.

    python scripts/cpu_speed.py                              # all three sections, about 15 minutes on 2 cores
    python scripts/cpu_speed.py --sections photo             # only 3.
    python scripts/cpu_speed.py --sections teacher --size 512 --runs 5

1. Throughput: the teacher's inference forward (hole size 3, channels_last, the path valid.py /
   test.py take on a CPU) in GFLOP/s of its own convolutions, against a 96->96 3x3 conv on an
   input of the same size and layout (the teacher's dominant layer shape), both in one process
   (interleaved, median of ``--runs``).
2. Training steps (forward, backward, Adam) of the recipes' and papers' shapes, each in two fresh
   processes: glibc's default allocator (``ATBSN_MALLOC=system``) and train.py's
   ``keep_freed_memory``; median of ``--runs`` after one warm-up step.

3. Photos (issue 24): each inference network as its test options set it up (the recipe's
   students A/B/C in ``options/test/noisy_folder.yml``'s 1024-px tiles; the N2N U-Net in the same
   tiles) on a 12-MP (4000 x 3000) input, in its own process, against a 48->48 3x3 conv at 1024²
   channels_last timed between the networks' runs (the students' common layer), both reusing freed
   memory as test.py's tiles do (``atbsn.utils.allocator.freed_memory_reused``). Rates count the
   network's own MACs per pixel (not the tiles' recomputed overlaps). Then one 12-MP JPEG through
   ``test.py`` (``/usr/bin/time -v``: wall time and peak RSS), with the recipe's adaptive strength
   and with ``val.strength.mode=full``, its stages timed in one process, and a ``torch.profiler``
   table of the student on one 1024² tile.

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


# arch: (test options, settings) as a user runs it; weights are random (speed does not depend on them)
PHOTO_ARCHS = {
    "ATBSNStudentA": ("options/test/noisy_folder.yml", []),
    "ATBSNStudentB": ("options/test/noisy_folder.yml", ["networks.student.type=ATBSNStudentB"]),
    "ATBSNStudentC": ("options/test/noisy_folder.yml", ["networks.student.type=ATBSNStudentC"]),
    "N2NUNet": ("options/test/test_n2n_gauss25.yml", ["val.tile.size=1024"]),
}
PHOTO_SHAPE = [3000, 4000]  # --photo-size
PHOTO_AMP = []  # --photo-amp: extra train.amp override for the photo section (empty: the test options' own)


def _test_model(arch: str):
    import torch

    from atbsn.models.setup import setup_model
    from atbsn.options import load_options

    path, sets = PHOTO_ARCHS[arch]
    opt = load_options(path, sets + PHOTO_AMP + ["path.pretrain_network=null", "val.strength.mode=full"])
    torch.manual_seed(0)
    model = setup_model(opt, torch.device("cpu"))
    model.train(False)
    return model, opt


def _conv_reference(amp_dtype=None):
    """The 48->48 3x3 conv at 1024², channels_last (a fresh output each call, as in a network),
    under the network's autocast dtype, so that a bf16 network is compared with a bf16 conv."""
    import torch

    cl = torch.channels_last
    conv = torch.nn.Conv2d(48, 48, 3, padding=1).to(memory_format=cl)
    f = torch.rand(1, 48, 1024, 1024).contiguous(memory_format=cl)
    flops = 2 * 48 * 48 * 9 * 1024 * 1024

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
            return conv(f)
    return run, flops


def photo_throughput(arch: str, runs: int) -> dict:
    import resource

    import torch

    from atbsn.inference import denoise_full_strength
    from atbsn.utils.allocator import freed_memory_reused
    from atbsn.utils.profiling import macs_per_pixel

    model, opt = _test_model(arch)
    net = model.networks[model.inference_role]
    macs = macs_per_pixel(net, size=256)
    tile = opt["val"]["tile"]["size"]
    x = torch.rand(1, 3, *PHOTO_SHAPE, generator=torch.Generator().manual_seed(1))
    conv, conv_flops = _conv_reference(model.amp_dtype)
    # as in test.py, the network's tiles reuse freed memory (atbsn.inference); so does the conv here
    with torch.no_grad(), freed_memory_reused():
        denoise_full_strength(model, x[..., :tile, :tile], tile)  # warm-up: one tile's shapes
        conv()
        t_net, t_conv = [], []
        for _ in range(runs):
            for _ in range(5):
                t = time.perf_counter()
                conv()
                t_conv.append(time.perf_counter() - t)
            t = time.perf_counter()
            denoise_full_strength(model, x, tile)
            t_net.append(time.perf_counter() - t)
    seconds, conv_s = statistics.median(t_net), statistics.median(t_conv)
    net_gflops = 2 * macs * x.shape[-2] * x.shape[-1] / seconds / 1e9
    conv_gflops = conv_flops / conv_s / 1e9
    return {"arch": arch, "amp": str(model.amp_dtype or "fp32").replace("torch.bfloat16", "bf16"),
            "macs_per_pixel": macs, "tile": tile, "seconds": seconds, "runs": runs,
            "gflops": net_gflops, "conv_gflops": conv_gflops, "fraction_of_conv": net_gflops / conv_gflops,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _photo_files(work: str):
    """A generated 12-MP JPEG (the photo-folder benchmark's kind: mild signal-dependent noise) and a
    random-weights student A checkpoint."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from photo_folder_benchmark import make_photo

    from atbsn.archs import ATBSNStudentA

    os.makedirs(work, exist_ok=True)
    h, w = PHOTO_SHAPE
    photo, weights = os.path.join(work, f"photo_{h}x{w}.jpg"), os.path.join(work, "student_a.pth")
    if not os.path.exists(photo):
        make_photo(photo, 0, *PHOTO_SHAPE)
    torch.manual_seed(0)
    torch.save(ATBSNStudentA().state_dict(), weights)
    return photo, weights


def photo_stages(work: str) -> dict:
    """test.py's steps for one photo, each timed (adaptive strength, as the recipe runs)."""
    import torch

    from atbsn.inference import denoise_full_strength
    from atbsn.strength import adaptive_blend
    from atbsn.utils.image import quantize
    from atbsn.utils.photo import read_photo, write_photo

    photo_path, _ = _photo_files(work)
    model, opt = _test_model("ATBSNStudentA")
    tile = opt["val"]["tile"]["size"]
    strength = {k: v for k, v in opt["val"]["strength"].items() if k != "mode"}  # the recipe's settings
    with torch.no_grad():
        denoise_full_strength(model, torch.rand(1, 3, min(tile, PHOTO_SHAPE[0]), min(tile, PHOTO_SHAPE[1])), tile)
        stages = {}

        def timed(name, fn):
            t = time.perf_counter()
            out = fn()
            stages[name] = time.perf_counter() - t
            return out

        photo = timed("read (decode, orientation, metadata)", lambda: read_photo(photo_path))
        x = timed("to tensor", lambda: photo.tensor()[None])
        d = timed("network (tiles, assembly)", lambda: denoise_full_strength(model, x, tile))
        out, _ = timed("adaptive strength (noise estimate, shrinkage, NL-means, Wiener)", lambda: adaptive_blend(x, d, **strength))
        pred = timed("to HWC array", lambda: out[0].numpy().transpose(1, 2, 0))
        q = timed("quantise to 8 bits", lambda: quantize(pred, 8))
        path = os.path.join(work, "stages_out.png")
        timed("encode + write PNG (metadata, atomic)", lambda: write_photo(path, q, 8, None, photo.icc_profile, photo.exif))
    total = sum(stages.values())
    return {"stages": stages, "total": total}


def photo_profile(arch: str = "ATBSNStudentA") -> list:
    """Self CPU time per op of one 1024² tile of the student (torch.profiler), largest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from atbsn.utils.allocator import freed_memory_reused

    model, _ = _test_model(arch)
    x = torch.rand(1, 3, min(1024, PHOTO_SHAPE[0]), min(1024, PHOTO_SHAPE[1]))
    with torch.no_grad(), freed_memory_reused():  # as test.py's tiles run
        model.denoise_tile(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.denoise_tile(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(((e.key, e.self_cpu_time_total, e.count) for e in events), key=lambda r: -r[1])
    return [{"op": k, "ms": t / 1e3, "share": t / total, "calls": n} for k, t, n in rows[:12]]


def test_py_run(work: str, strength: str) -> dict:
    """One 12-MP JPEG through test.py under /usr/bin/time -v: wall seconds and peak RSS."""
    import re
    import shutil

    photo, weights = _photo_files(work)
    out_dir = os.path.join(work, f"out_{strength}")
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "test.py", "-opt", "options/test/noisy_folder.yml", "--input", photo, "--output", out_dir,
           "--set", f"path.pretrain_network.student={weights}", f"val.strength.mode={strength}",
           "logger.progress_bar=never"] + PHOTO_AMP
    t = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    if run.returncode:
        sys.exit(f"test.py failed:\n{run.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1)) / 1024
    return {"strength": strength, "command": " ".join(cmd[1:]), "seconds": seconds, "peak_rss_mb": rss}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="throughput input side (default 1024: one megapixel)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", nargs="*", default=list(STEPS), help=f"training steps to time ({', '.join(STEPS)})")
    p.add_argument("--sections", nargs="*", default=["teacher", "steps", "photo"], choices=["teacher", "steps", "photo"])
    p.add_argument("--photo-archs", nargs="*", default=list(PHOTO_ARCHS), help="networks for the photo section")
    p.add_argument("--photo-runs", type=int, default=2, help="12-MP runs per network (median)")
    p.add_argument("--photo-size", default="3000x4000", help="HxW of the photo section's input")
    p.add_argument("--photo-amp", choices=["config", "fp32", "bf16"], default="config",
                   help="the photo section's precision: the test options' train.amp (default), or forced")
    p.add_argument("--out", default=os.path.join("results", "cpu_speed"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.chdir(ROOT)
    PHOTO_SHAPE[:] = [int(v) for v in args.photo_size.split("x")]
    PHOTO_AMP[:] = {"config": [], "fp32": ["train.amp=null"], "bf16": ["train.amp=bf16"]}[args.photo_amp]
    work = os.path.join(args.out, "photo")
    if args.worker:
        name, _, arg = args.worker.partition(":")
        jobs = {"throughput": lambda: throughput(args.size, args.runs), "step": lambda: train_step(arg, args.runs),
                "photo": lambda: photo_throughput(arg, args.photo_runs), "stages": lambda: photo_stages(work),
                "profile": lambda: photo_profile(arg)}
        print(json.dumps(jobs[name]()))
        return 0

    import torch

    def worker(name, malloc=""):
        env = {**os.environ, "ATBSN_MALLOC": malloc}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--size", str(args.size),
               "--runs", str(args.runs), "--photo-runs", str(args.photo_runs), "--photo-size", args.photo_size, "--photo-amp", args.photo_amp, "--out", args.out]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"{name}: failed\n{out.stderr}")
        print(f"{name}{' ATBSN_MALLOC=' + malloc if malloc else ''}: {time.perf_counter() - t:.1f} s", flush=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    from atbsn.train.loop import git_revision

    result = {"machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "command": " ".join(["python"] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
              "revision": git_revision()}
    lines = [f"Command: `{result['command']}` at revision {result['revision']}; torch {result['machine']['torch']}, "
             f"{result['machine']['threads']} threads", ""]
    if "teacher" in args.sections:
        t = result["throughput"] = worker("throughput", "system")
        lines += [f"Teacher inference at {t['size']}², channels_last: {t['teacher_ms']:.0f} ms, {t['teacher_gflops']:.0f} "
                  f"GFLOP/s = {100 * t['fraction_of_peak']:.0f}% of a 96->96 3x3 conv at the same size and layout "
                  f"({t['conv_gflops']:.0f} GFLOP/s)", ""]
    if "steps" in args.sections:
        result["steps"] = [(worker(f"step:{s}", "system"), worker(f"step:{s}")) for s in args.steps]
        lines += ["| training step | batch | glibc default ms | keep_freed_memory ms (train.py) | speed-up |",
                  "|---|---|---:|---:|---:|"]
        for system, kept in result["steps"]:
            lines.append(f"| {system['what']} | {system['batch']}x{system['crop']}² | {system['step_ms']:.0f} | "
                         f"{kept['step_ms']:.0f} | {system['step_ms'] / kept['step_ms']:.2f}x |")
        lines.append("")
    if "photo" in args.sections:
        h, w = PHOTO_SHAPE
        result["photo"] = [worker(f"photo:{a}") for a in args.photo_archs]  # as test.py: tiles reuse freed memory
        lines += [f"| network, {w}x{h} input, tiles as its test options | precision | MACs/px | tile | s | GFLOP/s | "
                  "48->48 conv GFLOP/s (same precision) | share of the conv's rate | peak RSS |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["photo"]:
            lines.append(f"| {r['arch']} | {r['amp']} | {r['macs_per_pixel']:,.0f} | {r['tile']} | {r['seconds']:.2f} | "
                         f"{r['gflops']:.0f} | {r['conv_gflops']:.0f} | **{100 * r['fraction_of_conv']:.0f}%** | "
                         f"{r['peak_rss_mb'] / 1024:.2f} GB |")
        runs = result["test_py"] = [test_py_run(work, mode) for mode in ("adaptive", "full")]
        lines += ["", f"One {h * w / 1e6:.1f}-MP JPEG end to end (process start, read, denoise, write PNG), `/usr/bin/time -v`:", "",
                  "| val.strength.mode | wall s | peak RSS |", "|---|---:|---:|"]
        for r in runs:
            lines.append(f"| {r['strength']} | {r['seconds']:.1f} | {r['peak_rss_mb'] / 1024:.2f} GB |")
        lines += ["", f"`{runs[0]['command']}`", ""]
        stages = result["stages"] = worker("stages")
        lines += ["test.py's steps for that photo in one process (student A, adaptive strength):", "",
                  "| step | s | share |", "|---|---:|---:|"]
        for name, sec in stages["stages"].items():
            lines.append(f"| {name} | {sec:.2f} | {100 * sec / stages['total']:.0f}% |")
        lines.append(f"| total | {stages['total']:.2f} | |")
        prof = result["profile"] = worker("profile:ATBSNStudentA")
        lines += ["", f"Student A on one {min(1024, h)}x{min(1024, w)} tile, `torch.profiler` self CPU time:", "", "| op | calls | ms | share |",
                  "|---|---:|---:|---:|"]
        for r in prof:
            lines.append(f"| `{r['op']}` | {r['calls']} | {r['ms']:.1f} | {100 * r['share']:.0f}% |")
    write_results(args.out, result, lines)
    return 0


def write_results(out: str, result: dict, lines: list) -> None:
    """``results.json`` and ``results.md`` (the table lines, also printed) into ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
