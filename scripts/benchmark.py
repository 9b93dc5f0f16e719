#!/usr/bin/env python
"""Per-architecture cost: parameters, MACs per pixel, inference and training-step time, peak memory.

    python scripts/benchmark.py                       # quick: 4 archs, 3 runs (about a minute on 2 cores)
    python scripts/benchmark.py --all --out benchmarks # every arch + method steps: the committed numbers
    python scripts/benchmark.py --archs N2NUNet --size 512 --device cuda --runs 20

Each arch is measured in its own subprocess so that peak memory (CUDA: max allocated; CPU: peak
RSS growth) is its own, with one progress line per measurement. Times are the median of ``--runs``
runs after ``--warmup`` runs, on the same random inputs. Writes JSON and a markdown table into
``results/benchmark/`` (``--out`` elsewhere; the committed numbers live in ``benchmarks/``).
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

QUICK_ARCHS = ("N2NUNet", "ATBSN", "ATBSNStudentA", "ATBSNStudentC")  # the default run: a minute or so on 2 cores


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, runs, warmup):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def conv_throughput(device, runs=5, warmup=2, size=256, channels=64):
    """GFLOP/s of a plain 3x3 conv (64->64, batch 1): the machine's reference number."""
    import torch

    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)
    x = torch.rand(1, channels, size, size, device=device)
    with torch.no_grad():
        t = _timed(lambda: conv(x), device, runs, warmup)
    return 2 * channels * channels * 9 * size * size / t / 1e9


def measure(arch: str, args) -> dict:
    import resource

    import torch

    from atbsn.archs import ARCH_REGISTRY
    from atbsn.inference import resolve_device
    from atbsn.utils.profiling import count_macs, count_parameters

    torch.manual_seed(0)
    device = resolve_device(args.device)
    net = ARCH_REGISTRY.get(arch)()
    channels = getattr(net, "in_channels", 3)
    params = count_parameters(net)
    net = net.to(device).eval()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    x = torch.rand(args.batch, channels, args.size, args.size, device=device)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731  (D-BSN returns (mu, f))
    with torch.no_grad():
        t_inf = _timed(lambda: net(x), device, args.runs, args.warmup)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    xt = torch.rand(args.train_batch, channels, args.train_size, args.train_size, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        first(net(xt)).abs().mean().backward()  # any scalar loss: the cost is forward + backward
        opt.step()

    t_train = _timed(step, device, args.runs, args.warmup)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # growth of the process's peak RSS over the loaded model (kB -> MiB)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    macs_pp = count_macs(net.cpu().eval(), torch.rand(1, channels, 256, 256)) / (256 * 256)
    infer_macs = macs_pp * args.size * args.size * args.batch
    return {
        "arch": arch, "params": params, "macs_per_pixel": macs_pp,
        "gmacs_inference": infer_macs / 1e9,
        "inference_ms": t_inf * 1e3, "inference_gflops": 2 * infer_macs / t_inf / 1e9,
        "train_step_ms": t_train * 1e3, "peak_memory_mib": peak,
        "size": args.size, "batch": args.batch, "train_size": args.train_size, "train_batch": args.train_batch,
    }


METHOD_STEPS = {  # official networks and batch geometry of each method's training step
    "cbsn": ("C-BSN (3 passes: stride-5 blind, stride-2 blind no-grad, non-blind)",
             {"model": {"type": "CBSNModel"}, "networks": {"net": {"type": "CBSN"}}}, 3, 4, 120),
    "dbsn_gray_awgn": ("D-BSN gray AWGN joint (backbone + sigma_mu + CNN_est, MAP)",
                       {"model": {"type": "DBSNModel", "noise": "awgn"},
                        "networks": {"net": {"type": "DBSN", "in_channels": 1},
                                     "sigma_mu": {"type": "DBSNSigmaMu", "out_channels": 1, "width": 16},
                                     "sigma_n": {"type": "DBSNSigmaN", "in_channels": 1, "out_channels": 1,
                                                 "width": 16}}}, 1, 8, 96),
    "dbsn_color_mg": ("D-BSN colour MG joint (3x3 covariances, MAP)",
                      {"model": {"type": "DBSNModel", "noise": "mg"},
                       "networks": {"net": {"type": "DBSN"}, "sigma_mu": {"type": "DBSNSigmaMu"},
                                    "sigma_n": {"type": "DBSNSigmaN"}}}, 3, 8, 96),
}


def measure_method_step(args) -> dict:
    """One optimiser step of a method's own ``training_step`` (all its passes and heads)."""
    import torch

    from atbsn.inference import resolve_device
    from atbsn.models import Progress, build_model

    name = args.worker[len("method_"):]
    title, opt, channels, batch, size = METHOD_STEPS[name]
    batch, size = args.method_batch or batch, args.method_size or size
    torch.manual_seed(0)
    device = resolve_device(args.device)
    model = build_model(opt).to(device)
    model.train(True)
    params = list(model.trainable_parameters())
    optimizer = torch.optim.Adam(params, 1e-4)
    x = torch.rand(batch, channels, size, size, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.training_step({"noisy": x}, Progress(250000, 500000, 0, 1))["loss"].backward()
        optimizer.step()

    t = _timed(step, device, args.runs, args.warmup)
    return {"method": name, "title": title, "batch": batch, "size": size, "step_ms": t * 1e3,
            "params": sum(p.numel() for p in params)}


def measure_distill(args) -> dict:
    """AT-BSN distillation step (teacher targets at 7 hole sizes + student C update): the naive form
    (7 full teacher passes, as the official code) against one shared U-Net pass + 7 heads."""
    import torch

    from atbsn.archs import ATBSN, ATBSNStudentC
    from atbsn.inference import resolve_device
    from atbsn.models import ATBSNDistillation, Progress

    torch.manual_seed(0)
    device = resolve_device(args.device)
    teacher, student = ATBSN().to(device), ATBSNStudentC().to(device)
    model = ATBSNDistillation({"teacher": teacher, "student": student}, init_student_from_teacher=False)
    model.train(True)
    opt = torch.optim.Adam(student.parameters(), 3e-4)
    x = torch.rand(args.distill_batch, 3, args.distill_size, args.distill_size, device=device)
    progress = Progress(0, 1, 0, 1)

    def naive_targets(inp):
        with torch.no_grad():
            return [teacher(inp, hole_size=k) for k in model.hole_sizes]

    def step(targets_fn):
        def run():
            original = model.teacher_targets
            model.teacher_targets = targets_fn or original
            try:
                loss = model.training_step({"noisy": x}, progress)["loss"]
            finally:
                model.teacher_targets = original
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(naive_targets(x * 255), model.teacher_targets(x * 255)))
    t_naive = _timed(step(naive_targets), device, args.runs, args.warmup)
    t_shared = _timed(step(None), device, args.runs, args.warmup)
    return {"batch": args.distill_batch, "size": args.distill_size, "naive_ms": t_naive * 1e3,
            "shared_ms": t_shared * 1e3, "speedup": t_naive / t_shared, "max_target_diff_255": diff}


def measure_teacher_vs_straightforward(args) -> dict:
    """Our blind conv (two zero rows on top, no output slice) against the spec's literal recipe
    (pad one row, conv with padding 1, drop the last row): teacher forward and training step."""
    import torch
    import torch.nn.functional as F

    import atbsn.archs.atbsn as arch
    from atbsn.inference import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = arch.ATBSN().to(device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device) * 255
    xt = torch.rand(args.train_batch, 3, args.train_size, args.train_size, device=device) * 255
    opt = torch.optim.Adam(net.parameters(), 1e-4)

    def straightforward(self, inp):
        if self.blind:
            inp = F.pad(inp, (0, 0, 1, 0))
            return F.leaky_relu(F.conv2d(inp, self.conv.weight, self.conv.bias, padding=1)[..., :-1, :], arch.SLOPE)
        return F.leaky_relu(self.conv(inp), arch.SLOPE)

    def step():
        opt.zero_grad(set_to_none=True)
        F.l1_loss(net(xt, hole_size=9), xt).backward()
        opt.step()

    out = {}
    original = arch.Conv.forward
    try:
        for name, fwd in (("ours", original), ("straightforward", straightforward)):
            arch.Conv.forward = fwd
            with torch.no_grad():
                out[f"{name}_forward_ms"] = _timed(lambda: net(x, hole_size=3), device, args.runs, args.warmup) * 1e3
            out[f"{name}_train_step_ms"] = _timed(step, device, args.runs, args.warmup) * 1e3
    finally:
        arch.Conv.forward = original
    macs = 1249029 * args.size * args.size * args.batch
    out["ours_forward_gflops"] = 2 * macs / (out["ours_forward_ms"] / 1e3) / 1e9
    return out


def measure_full_resolution(args) -> dict:
    """Peak RSS of denoising a ``--full-res-size`` image (default 4000x3000, 12 MP), tiled
    (``--full-res-tile``) and, for comparison, untiled; for tiles, the pixels the network ran on
    over the image's (executed / useful work). Each measurement runs in its own process."""
    import resource

    import torch

    from atbsn.archs import ARCH_REGISTRY
    from atbsn.inference import default_overlap, denoise, tile_alignment, tile_starts
    from atbsn.models import Neighbor2Neighbor

    torch.manual_seed(0)
    model = Neighbor2Neighbor({"net": ARCH_REGISTRY.get(args.full_res_arch)()})
    model.train(False)
    if args.channels_last:  # as valid.py / test.py run on a CPU by default (val.channels_last: auto)
        model.channels_last = True
        model.networks.to(memory_format=torch.channels_last)
    h, w = (int(v) for v in args.full_res_size.lower().split("x"))
    x = torch.rand(1, 3, h, w)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tile = args.full_res_tile if args.worker == "fullres_tiled" else None
    t = time.perf_counter()
    out = denoise(model, x, tile, memory_limit_gb=float("inf"))  # untiled means untiled here
    seconds = time.perf_counter() - t
    assert out.shape == x.shape
    work = 1.0
    if tile and max(h, w) > tile:
        ov, al = default_overlap(model), tile_alignment(model)
        rows = [min(tile, h - y) for y in tile_starts(h, tile, ov, al)] if h > tile else [h]
        cols = [min(tile, w - c) for c in tile_starts(w, tile, ov, al)] if w > tile else [w]
        work = sum(rows) * sum(cols) / (h * w)
    return {"arch": args.full_res_arch, "size": f"{w}x{h}", "work_ratio": work, "channels_last": args.channels_last,
            "tile": tile, "overlap": default_overlap(model) if tile else None,
            "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="*", help=f"registered arch names (default: {' '.join(QUICK_ARCHS)}; --all: every one)")
    p.add_argument("--all", action="store_true", help="every registered arch and every method step")
    p.add_argument("--method-steps", action="store_true",
                   help="also time the method training steps of the chosen archs (AT-BSN teacher/distillation, ...)")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=256, help="inference input side")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train-size", type=int, default=128)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=os.path.join("results", "benchmark"), help="folder for results.json / results.md "
                   "(default: results/benchmark; the committed numbers are in benchmarks/)")
    p.add_argument("--distill-batch", type=int, default=8, help="AT-BSN distillation step batch (official: 8)")
    p.add_argument("--distill-size", type=int, default=128, help="AT-BSN distillation crop (official: 128)")
    p.add_argument("--no-method-steps", action="store_true", help="with --all: skip the method training steps")
    p.add_argument("--full-res", action="store_true", help="also measure 12-MP (4000x3000) inference memory")
    p.add_argument("--full-res-arch", default="ATBSNStudentA")
    p.add_argument("--full-res-tile", type=int, default=512)
    p.add_argument("--full-res-size", default="3000x4000", help="HxW of the --full-res image")
    p.add_argument("--full-res-untiled-only", action="store_true", help="--full-res without the tiled run")
    p.add_argument("--channels-last", action="store_true", help="--full-res in channels_last (weights and input)")
    p.add_argument("--methods", nargs="*", default=None, help=f"method training steps to time ({', '.join(METHOD_STEPS)}; default: those "
                   f"whose network is among --archs; none with --no-method-steps)")
    p.add_argument("--method-batch", type=int, default=None, help="override each method step's official batch")
    p.add_argument("--method-size", type=int, default=None, help="override each method step's official crop")
    p.add_argument("--official", metavar="PATH", nargs="+", help="also time side by side with checkouts of the official "
                   "code (hnmizuho/AT-BSN, TaoHuang2018/Neighbor2Neighbor, XHWXD/DBSN; each recognised by its layout), "
                   "interleaved in this process")
    p.add_argument("--n2n-batch", type=int, default=4, help="--official N2N training step batch (official: 4)")
    p.add_argument("--n2n-size", type=int, default=256, help="--official N2N training step crop (official: 256)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        fn = {"distill": measure_distill, "teacher": measure_teacher_vs_straightforward,
              "fullres_tiled": measure_full_resolution, "fullres_untiled": measure_full_resolution}.get(args.worker)
        if args.worker.startswith("method_"):
            fn = measure_method_step
        print(json.dumps(fn(args) if fn else measure(args.worker, args)))
        return 0

    from atbsn.archs import ARCH_REGISTRY
    from atbsn.inference import resolve_device

    import benchmark_official

    for path in args.official or []:  # before anything is measured
        benchmark_official.identify(path)
    archs = args.archs or (ARCH_REGISTRY.names() if args.all else list(QUICK_ARCHS))
    with_steps = (args.all or args.method_steps or args.methods is not None) and not args.no_method_steps
    device = resolve_device(args.device)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "conv3x3_gflops": round(conv_throughput(device, args.runs, args.warmup), 2),
    }
    planned = [*archs]
    if with_steps and "ATBSN" in archs:
        planned += ["teacher", "distill"]
    if with_steps:
        chosen = args.methods if args.methods is not None else [
            m for m, spec in METHOD_STEPS.items() if spec[1]["networks"]["net"]["type"] in archs]
        planned += [f"method_{m}" for m in chosen]
    if args.full_res:
        planned += ["fullres_untiled"] if args.full_res_untiled_only else ["fullres_tiled", "fullres_untiled"]
    print(f"{len(planned)} measurements on {machine['device']} ({machine['threads']} threads), median of {args.runs} "
          f"after {args.warmup} warm-up; 3x3 conv {machine['conv3x3_gflops']} GFLOP/s", flush=True)

    def worker(name):
        t0 = time.perf_counter()
        print(f"[{planned.index(name) + 1}/{len(planned)}] {name} ...", end=" ", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--device", args.device,
               "--size", str(args.size), "--batch", str(args.batch), "--train-size", str(args.train_size),
               "--train-batch", str(args.train_batch), "--runs", str(args.runs), "--warmup", str(args.warmup),
               "--distill-batch", str(args.distill_batch), "--distill-size", str(args.distill_size),
               "--full-res-arch", args.full_res_arch, "--full-res-tile", str(args.full_res_tile),
               "--full-res-size", args.full_res_size] + (["--channels-last"] if args.channels_last else [])
        for flag, value in (("--method-batch", args.method_batch), ("--method-size", args.method_size)):
            if value:
                cmd += [flag, str(value)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{name}: failed\n{out.stderr}")
        print(f"{time.perf_counter() - t0:.1f} s", flush=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = [worker(arch) for arch in archs]
    method_steps = {}
    if "teacher" in planned:
        method_steps = {"atbsn_teacher": worker("teacher"), "atbsn_distillation": worker("distill")}
    if with_steps:
        method_steps["method_steps"] = [worker(n) for n in planned if n.startswith("method_")]
    if args.full_res:
        method_steps["full_resolution"] = [worker(n) for n in planned if n.startswith("fullres_")]
    if args.official:
        method_steps["official"] = benchmark_official.measure(args.official, args)
    os.makedirs(args.out, exist_ok=True)
    result = {"machine": machine, "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "rows": rows,
              **method_steps}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    from atbsn.train.loop import git_revision

    lines = [
        f"Command: `{result['command']}` at revision {git_revision()}",
        "",
        f"Device: {machine['device']} ({device.type}), torch {machine['torch']}, {machine['threads']} threads; "
        f"3x3-conv throughput {machine['conv3x3_gflops']} GFLOP/s",
        "",
        f"| arch | params | MACs/pixel | GMACs @{args.size}² x{args.batch} | inference ms | GFLOP/s | "
        f"train step ms ({args.train_batch}x{args.train_size}²) | peak MiB (CUDA: allocated; CPU: RSS growth) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['params']:,} | {r['macs_per_pixel']:,.0f} | {r['gmacs_inference']:.2f} | "
                     f"{r['inference_ms']:.1f} | {r['inference_gflops']:.1f} | {r['train_step_ms']:.1f} | "
                     f"{r['peak_memory_mib']:.0f} |")
    if "atbsn_teacher" in method_steps:
        t, d = method_steps["atbsn_teacher"], method_steps["atbsn_distillation"]
        lines += [
            "",
            f"AT-BSN teacher, blind conv as implemented vs the spec's literal recipe (pad row, conv, drop row): "
            f"forward @{args.size}² x{args.batch} {t['ours_forward_ms']:.1f} ms vs {t['straightforward_forward_ms']:.1f} ms "
            f"({t['ours_forward_gflops']:.1f} GFLOP/s; 3x3 conv {machine['conv3x3_gflops']} GFLOP/s); "
            f"train step ({args.train_batch}x{args.train_size}²) {t['ours_train_step_ms']:.1f} ms vs "
            f"{t['straightforward_train_step_ms']:.1f} ms",
            "",
            f"AT-BSN distillation step ({d['batch']}x{d['size']}², 7 teachers + student C update): naive "
            f"{d['naive_ms']:.1f} ms, shared U-Net {d['shared_ms']:.1f} ms, speed-up {d['speedup']:.2f}x "
            f"(max target difference {d['max_target_diff_255']:.2e} on the 255 scale)",
        ]
    for r in method_steps.get("method_steps", []):
        lines.append(f"\n{r['title']}: one training step at {r['batch']}x{r['size']}², {r['params']:,} trained "
                     f"parameters: {r['step_ms']:.1f} ms")
    for r in method_steps.get("full_resolution", []):
        how = (f"tiled {r['tile']} px, overlap {r['overlap']} px, executed/useful work {r['work_ratio']:.2f}x"
               if r["tile"] else "untiled") + (", channels_last" if r.get("channels_last") else "")
        lines.append(f"\n{r['size']} image, {r['arch']}, {how}: {r['seconds']:.1f} s, peak RSS "
                     f"{r['peak_rss_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f} MiB during inference)")
    if method_steps.get("official"):
        lines += ["", f"Side by side with the official code ({', '.join(args.official)}), same weights, interleaved in "
                      f"one process, median of {args.runs} after {args.warmup} warm-up:", "",
                  *benchmark_official.markdown(method_steps["official"])]
    table = "\n".join(lines)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
