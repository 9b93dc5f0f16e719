#!/usr/bin/env python
"""12-MP inference on a CUDA GPU (issue 24): each network as its test options set it up, in bf16
autocast and channels_last, against the same-shape conv on the same GPU, then one 12-MP JPEG
through ``test.py`` end to end.

    python scripts/gpu_speed.py                                    # student A, about a minute with start-up
    python scripts/gpu_speed.py --archs ATBSNStudentA ATBSNStudentB ATBSNStudentC N2NUNet --compile
    python scripts/gpu_speed.py --device cpu --photo-size 256x384 --runs 2   # a dry run of the script itself

Per network: the whole photo in one forward (no tiles: a GPU holds a 12-MP student's activations)
and the tiled path ``test.py`` takes (``options/test/noisy_folder.yml``'s tiles, each tile copied
back to the host). Times are CUDA-event medians of ``--runs`` after ``--warmup`` runs on the same
input; rates count the network's own MACs per pixel (``atbsn.utils.profiling.macs_per_pixel``).
The reference is a 48->48 3x3 conv (the students' common layer) on a 1024² map at the same
precision and layout. ``--compile`` adds ``torch.compile`` (inductor) of the untiled forward.
Writes ``results.json`` and ``results.md`` into ``--out`` (default ``results/gpu_speed``).
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
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def _timer(device):
    """fn -> seconds: CUDA events on a GPU, perf_counter on the CPU (the dry run)."""
    import torch

    if device.type != "cuda":
        def run(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return run

    def run(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    return run


def _median(timer, fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        timer(fn)
    return statistics.median(timer(fn) for _ in range(runs))


def network(arch: str, shape, device, amp: str, runs: int, warmup: int, compile_: bool) -> dict:
    import torch

    from atbsn.inference import denoise_full_strength
    from atbsn.models.setup import setup_model
    from atbsn.options import load_options
    from atbsn.utils.profiling import macs_per_pixel
    from cpu_speed import PHOTO_ARCHS

    path, sets = PHOTO_ARCHS[arch]
    opt = load_options(path, sets + ["path.pretrain_network=null", "val.strength.mode=full", "val.channels_last=true",
                                     "train.amp=" + ("null" if amp == "fp32" else amp)])
    torch.manual_seed(0)
    model = setup_model(opt, device)
    model.train(False)
    net = model.networks[model.inference_role]
    macs = macs_per_pixel(net, size=256)
    tile = opt["val"]["tile"]["size"]
    timer = _timer(device)
    x = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(1))
    xd = x.to(device)
    flops = 2 * macs * shape[0] * shape[1]
    row = {"arch": arch, "amp": amp, "macs_per_pixel": macs, "shape": list(shape), "tile": tile}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        row["untiled_s"] = _median(timer, lambda: model.denoise_tile(xd), runs, warmup)
        if device.type == "cuda":
            row["untiled_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        row["untiled_gflops"] = flops / row["untiled_s"] / 1e9
        # test.py's path: host tensor in, tiles to the device and back, assembled on the host
        row["tiled_s"] = _median(timer, lambda: denoise_full_strength(model, x, tile), max(1, runs // 4), 1)
        if compile_:
            try:
                model.set_runner(model.inference_role, torch.compile(net))
                row["compiled_s"] = _median(timer, lambda: model.denoise_tile(xd), runs, warmup + 2)
                row["compiled_gflops"] = flops / row["compiled_s"] / 1e9
            except Exception as err:  # noqa: BLE001 - the table says what failed, the other rows stand
                row["compiled_error"] = f"{type(err).__name__}: {err}"[:300]
            model.set_runner(model.inference_role, net)
    return row


def conv_reference(device, amp: str, runs: int, warmup: int) -> float:
    """GFLOP/s of a 48->48 3x3 conv on a 1024² channels_last map at the networks' precision."""
    import torch

    cl = torch.channels_last
    conv = torch.nn.Conv2d(48, 48, 3, padding=1).to(device, memory_format=cl)
    f = torch.rand(1, 48, 1024, 1024, device=device).contiguous(memory_format=cl)
    dtype = None if amp == "fp32" else torch.bfloat16

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            conv(f)
    return 2 * 48 * 48 * 9 * 1024 * 1024 / _median(_timer(device), run, runs * 3, warmup) / 1e9


def test_py(shape, device_name: str, work: str) -> list:
    """One generated 12-MP JPEG through test.py (process start to PNG written), both strengths."""
    import shutil

    import torch

    from atbsn.archs import ATBSNStudentA
    from photo_folder_benchmark import make_photo

    os.makedirs(work, exist_ok=True)
    photo, weights = os.path.join(work, f"photo_{shape[0]}x{shape[1]}.jpg"), os.path.join(work, "student_a.pth")
    if not os.path.exists(photo):
        make_photo(photo, 0, *shape)
    torch.manual_seed(0)
    torch.save(ATBSNStudentA().state_dict(), weights)
    rows = []
    for mode in ("full", "adaptive"):
        out_dir = os.path.join(work, f"out_{mode}")
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "test.py", "-opt", "options/test/noisy_folder.yml", "--input", photo, "--output", out_dir,
               "--set", f"path.pretrain_network.student={weights}", f"val.strength.mode={mode}", f"device={device_name}",
               "logger.progress_bar=never"]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            rows.append({"strength": mode, "error": run.stderr[-500:]})
            continue
        rows.append({"strength": mode, "seconds": time.perf_counter() - t, "command": " ".join(cmd[1:])})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="*", default=["ATBSNStudentA"])
    p.add_argument("--photo-size", default="3000x4000", help="HxW")
    p.add_argument("--amp", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the untiled forward")
    p.add_argument("--no-test-py", action="store_true", help="skip the end-to-end test.py runs")
    p.add_argument("--out", default=os.path.join("results", "gpu_speed"))
    args = p.parse_args()
    os.chdir(ROOT)

    import torch

    from atbsn.train.loop import git_revision
    from cpu_speed import write_results

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_speed.py: no CUDA device here (use --device cpu for a dry run)")
    shape = [int(v) for v in args.photo_size.split("x")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {"device": name, "torch": torch.__version__, "revision": git_revision(), "amp": args.amp,
              "command": " ".join(["python", "scripts/gpu_speed.py"] + sys.argv[1:])}
    result["conv_gflops"] = conv_reference(device, args.amp, args.runs, args.warmup)
    print(f"48->48 conv at 1024², {args.amp}, channels_last: {result['conv_gflops']:.0f} GFLOP/s", flush=True)
    result["networks"] = []
    for arch in args.archs:
        row = network(arch, shape, device, args.amp, args.runs, args.warmup, args.compile)
        row["fraction_of_conv"] = row["untiled_gflops"] / result["conv_gflops"]
        result["networks"].append(row)
        print(json.dumps(row), flush=True)
    if not args.no_test_py:
        result["test_py"] = test_py(shape, args.device, os.path.join(args.out, "photo"))
        print(json.dumps(result["test_py"]), flush=True)

    h, w = shape
    lines = [f"`{result['command']}` at {result['revision']}: {name}, torch {result['torch']}", "",
             f"| network, {w}x{h}, {args.amp}, channels_last | MACs/px | untiled ms | GFLOP/s | share of the conv's "
             f"rate ({result['conv_gflops']:.0f} GFLOP/s) | peak GB | test.py's tiles ({'{}'} px), ms | compiled ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["networks"]:
        compiled = f"{1e3 * r['compiled_s']:.1f}" if "compiled_s" in r else r.get("compiled_error", "-")
        lines.append(f"| {r['arch']} | {r['macs_per_pixel']:,.0f} | {1e3 * r['untiled_s']:.1f} | {r['untiled_gflops']:.0f} | "
                     f"{100 * r['fraction_of_conv']:.0f}% | {'%.2f' % r['untiled_peak_gb'] if 'untiled_peak_gb' in r else '-'} | "
                     f"{1e3 * r['tiled_s']:.0f} | {compiled} |")
    lines[2] = lines[2].replace("{}", str(result["networks"][0]["tile"]) if result["networks"] else "-")
    for r in result.get("test_py", []):
        lines += ["", f"test.py, one {h * w / 1e6:.1f}-MP JPEG, val.strength.mode={r['strength']}: "
                  + (f"{r['seconds']:.1f} s wall (process start to PNG written)" if "seconds" in r else "failed: " + r["error"])]
    write_results(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
